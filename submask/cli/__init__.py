"""The ``submask`` command line: thin click commands over the Python API, registered here in one list.

>>> submask build base/ rl-step-1000/ -o rl.smask          # doctest: +SKIP
>>> submask compare rl.smask seed2.smask dpo.smask --by module   # doctest: +SKIP
"""

from . import analysis, apply, build, convert, demo, hub, inspect, plot
from .root import main

COMMANDS = (
    inspect.info,               # summarise a mask from its header
    inspect.validate,           # decode and check every tensor
    build.build,                # the update mask of two checkpoints
    analysis.stats,             # densities per layer, module type or tensor
    analysis.compare_command,   # overlap and Jaccard of every pair, beside chance
    analysis.combine,           # and, or, xor, diff, not of mask files
    plot.plot,                  # density heatmaps, per-layer lines, the tolerance ladder, the overlap matrix
    apply.apply_command,        # a sparse-update model: base + mask * (finetuned - base)
    convert.convert_command,    # masks from and for other tools' formats
    hub.push,                   # a mask next to a model on the Hub
    hub.pull,                   # a mask from the Hub, pinned to a commit
    hub.ls,                     # the masks in a Hub repo, from their headers
    demo.demo,                  # the whole story on a real model
)
for command in COMMANDS:
    main.add_command(command)

__all__ = ["COMMANDS", "main"]
