"""A single-file SD-1.x checkpoint (CompVis layout) through our loaders.

The file is built here from a tiny diffusers pipeline by renaming its keys into the CompVis layout
(this test's own mapping, written from the layout's description), and diffusers' own
CompVis -> diffusers converter checks that the file is what real SD files look like before our
loaders read it.
"""

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from md_export.models import CheckpointError, get_preset, load_pretrained, open_checkpoint

pytest.importorskip("diffusers")

TINY = "sd15-tiny"
TOLERANCE = 1e-4  # fp32, same math, different op order
LEVELS = 4
LAYERS = 2
HAS_TRANSFORMER = (True, True, True, False)
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def compvis_unet_blocks() -> dict[str, str]:
    """diffusers block -> CompVis block, for the SD-1.5 block structure at 4 levels x 2 layers."""
    blocks = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
              "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2",
              "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
              "mid_block.resnets.1": "middle_block.2"}
    number = 1
    for level in range(LEVELS):
        for layer in range(LAYERS):
            blocks[f"down_blocks.{level}.resnets.{layer}"] = f"input_blocks.{number}.0"
            blocks[f"down_blocks.{level}.attentions.{layer}"] = f"input_blocks.{number}.1"
            number += 1
        if level < LEVELS - 1:
            blocks[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{number}.0.op"
            number += 1
    number = 0
    for up in range(LEVELS):
        level = LEVELS - 1 - up
        for layer in range(LAYERS + 1):
            blocks[f"up_blocks.{up}.resnets.{layer}"] = f"output_blocks.{number}.0"
            blocks[f"up_blocks.{up}.attentions.{layer}"] = f"output_blocks.{number}.1"
            if layer == LAYERS and up < LEVELS - 1:
                position = 2 if HAS_TRANSFORMER[level] else 1  # after the transformer, if any
                blocks[f"up_blocks.{up}.upsamplers.0.conv"] = f"output_blocks.{number}.{position}.conv"
            number += 1
    return blocks


def to_compvis_unet(state: dict) -> dict:
    blocks = compvis_unet_blocks()
    out = {}
    for key, value in state.items():
        block = max((b for b in blocks if key.startswith(b + ".")), key=len)
        rest = key[len(block) + 1:]
        if ".resnets." in block:
            layer, param = rest.rsplit(".", 1)
            rest = f"{_RESNET[layer]}.{param}"
        out[f"model.diffusion_model.{blocks[block]}.{rest}"] = value
    return out


def to_compvis_vae(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("quant_conv", "post_quant_conv"):
            name = key
        elif parts[1] in ("conv_in", "conv_out"):
            name = key
        elif parts[1] == "conv_norm_out":
            name = f"{parts[0]}.norm_out.{parts[2]}"
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            name = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{_VAE_RESNET[parts[4]]}.{parts[5]}"
        elif parts[1] == "mid_block":  # attentions.0.<projection>.<param>
            projection, param = ".".join(parts[4:-1]), parts[-1]
            name = f"{parts[0]}.mid.attn_1.{_VAE_ATTENTION[projection]}.{param}"
            if projection != "group_norm" and param == "weight":
                value = value[:, :, None, None]  # CompVis' attention projections are 1x1 convs
        else:  # (down|up)_blocks.i.(resnets.j.layer|(down|up)samplers.0.conv).param
            level = int(parts[2]) if parts[0] == "encoder" else LEVELS - 1 - int(parts[2])
            stage = "down" if parts[0] == "encoder" else "up"
            if parts[3] == "resnets":
                name = f"{parts[0]}.{stage}.{level}.block.{parts[4]}.{_VAE_RESNET[parts[5]]}.{parts[6]}"
            else:
                name = f"{parts[0]}.{stage}.{level}.{stage}sample.conv.{parts[-1]}"
        out["first_stage_model." + name] = value
    return out


def sd_single_file(reference, path, extra=None):
    state = to_compvis_unet(reference["unet"].state_dict())
    state.update(to_compvis_vae(reference["vae"].state_dict()))
    # SD-1.x files hold the CLIPTextModel under `text_model.` (transformers 4 names; 5 dropped the level)
    state.update({"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v
                  for k, v in reference["text_encoder"].state_dict().items()})
    # what real SD-1.x files also carry: sampler buffers and EMA copies, no network's weights
    state.update({"betas": torch.linspace(1e-4, 0.02, 10), "alphas_cumprod": torch.ones(10),
                  "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(0)})
    state.update(extra or {})
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state


@pytest.fixture(scope="module")
def single_file(tiny_sd15_diffusers, tmp_path_factory):
    _, reference = tiny_sd15_diffusers
    path = tmp_path_factory.mktemp("sd_single") / "tiny-sd15.safetensors"
    state = sd_single_file(reference, path)
    return path, state, reference


def test_the_built_file_is_what_diffusers_reads_as_compvis(single_file):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    _, state, reference = single_file
    unet = convert_ldm_unet_checkpoint(state, dict(reference["unet"].config))
    assert unet.keys() == reference["unet"].state_dict().keys()
    assert all(torch.equal(v, unet[k]) for k, v in reference["unet"].state_dict().items())
    vae = convert_ldm_vae_checkpoint(state, dict(reference["vae"].config))
    assert vae.keys() == reference["vae"].state_dict().keys()
    assert all(torch.equal(v, vae[k].reshape(v.shape)) for k, v in reference["vae"].state_dict().items())


def test_every_component_loads_and_matches(single_file):
    path, _, reference = single_file
    preset = get_preset(TINY)
    source = open_checkpoint(path)
    assert source.layout == "sd_single_file" and all(source.has(c) for c in ("text_encoder", "unet", "vae_decoder"))
    generator = torch.Generator().manual_seed(0)
    latent, text = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 77, 64, generator=generator)
    timestep = torch.tensor([10.0, 700.0])
    ids = torch.randint(0, 49408, (1, 77), generator=generator)
    image = torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1
    scale = preset.vae.scaling_factor
    vae = reference["vae"]
    with torch.no_grad():
        unet = (source.load(preset, "unet")(latent, timestep, text)
                - reference["unet"](latent, timestep, encoder_hidden_states=text).sample).abs().max().item()
        decoder = (source.load(preset, "vae_decoder")(latent[:1])
                   - vae.decode(latent[:1] / scale).sample).abs().max().item()
        encoder = (source.load(preset, "vae_encoder")(image)
                   - vae.encode(image).latent_dist.mean * scale).abs().max().item()
        text_encoder = (source.load(preset, "text_encoder")(ids)
                        - reference["text_encoder"](input_ids=ids).last_hidden_state).abs().max().item()
    assert unet <= TOLERANCE  # fp32, same math: 1e-4
    assert decoder <= TOLERANCE  # fp32, same math: 1e-4
    assert encoder <= TOLERANCE  # fp32, same math: 1e-4
    assert text_encoder <= TOLERANCE  # fp32, same math: 1e-4


def test_text_encoder_keys_without_text_model_prefix(tiny_sd15_diffusers, tmp_path):
    """Older SD-1 files were written with a transformers that had no `text_model.` level."""
    _, reference = tiny_sd15_diffusers
    path = tmp_path / "old.safetensors"
    state = sd_single_file(reference, path)
    renamed = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
               for k, v in state.items()}
    save_file({k: v.contiguous() for k, v in renamed.items()}, str(path))
    assert not any(".text_model." in key for key in open_checkpoint(path).keys)
    ours = load_pretrained(get_preset(TINY), "text_encoder", path)
    ids = torch.arange(77)[None]
    with torch.no_grad():
        difference = (ours(ids) - reference["text_encoder"](input_ids=ids).last_hidden_state).abs().max().item()
    assert difference <= TOLERANCE  # fp32, same math: 1e-4


def test_unknown_keys_are_named(tiny_sd15_diffusers, tmp_path):
    _, reference = tiny_sd15_diffusers
    path = tmp_path / "extra.safetensors"
    sd_single_file(reference, path, extra={"model.diffusion_model.label_emb.0.0.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match=r"unmapped keys \(no conversion rule\): model.diffusion_model.label_emb"):
        load_pretrained(get_preset(TINY), "unet", path)
    sd_single_file(reference, path, extra={"lora_unet_down.alpha": torch.ones(1)})
    with pytest.raises(CheckpointError, match="lora_unet_down.alpha"):
        load_pretrained(get_preset(TINY), "vae_decoder", path)


def test_a_preset_with_other_blocks_is_a_clear_error(single_file):
    path, _, _ = single_file
    preset = get_preset(TINY)
    fewer = dataclasses.replace(preset, unet=preset.unet.replace(down_layers_per_level=(1, 1, 1, 1)))
    with pytest.raises(CheckpointError) as info:
        load_pretrained(fewer, "unet", path)
    # the file's extra blocks have no place in the preset's UNet: named as they are in the file
    assert "model.diffusion_model.input_blocks.11.0.in_layers.0.bias" in info.value.unmapped


def test_openclip_text_encoder_is_refused_by_name(tmp_path):
    path = tmp_path / "sd2.safetensors"
    save_file({"model.diffusion_model.out.2.bias": torch.zeros(4),
               "cond_stage_model.model.token_embedding.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(CheckpointError, match="OpenCLIP"):
        load_pretrained(get_preset(TINY), "text_encoder", path)


def test_a_file_that_is_not_an_sd_checkpoint_is_refused(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file({"conv_in.weight": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="SD-1.x checkpoint"):
        open_checkpoint(path)


def test_a_pickled_ckpt_file_loads(single_file, tmp_path):
    """The .ckpt distribution: a training checkpoint whose "state_dict" holds the same keys."""
    path, state, reference = single_file
    ckpt = tmp_path / "tiny-sd15.ckpt"
    torch.save({"state_dict": state, "global_step": 1}, str(ckpt))
    decoder = load_pretrained(get_preset(TINY), "vae_decoder", ckpt)
    assert torch.equal(decoder.decoder.conv_out.weight, reference["vae"].decoder.conv_out.weight)
