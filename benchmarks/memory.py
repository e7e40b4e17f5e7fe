"""Peak resident memory of this process.

The kernel keeps one high-water mark per process (VmHWM / ru_maxrss) and it never goes down, so a
value recorded after an item is the peak of everything measured so far in this process, not of that
item alone; run one item per process (`--components unet`) when the per-item peak matters.
"""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is bytes on macOS, kilobytes on Linux.
    return usage / (1024.0 * 1024.0) if sys.platform == "darwin" else usage / 1024.0
