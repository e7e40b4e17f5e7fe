"""md_export: take MobileDiffusion-class text-to-image models from PyTorch to phones.

`md_export.export_model(module, sample_inputs, formats=[...], out_dir=...)` exports any nn.Module
(the same function as `md_export.export.export`); `md_export.calibrate_module(module, samples, out)`
records calibration data for it; the CLI `md-export` covers the presets.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `md-export --help` and the tokenizer should not pay for importing every converter.
    if name == "export_model":
        from .export.driver import export

        return export
    if name == "calibrate_module":
        from .calibration.user_inputs import calibrate_module

        return calibrate_module
    raise AttributeError(name)
