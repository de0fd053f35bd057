"""The tasks of the ELM Network: one module per task, registered here once.

A task module holds its data, `NETWORK` (the network's setup for it), `TRAINING` (the
trainer's defaults) and `Task`, the adapter `elmnet.train` calls: `batch(step, device)
-> (x, state, target)` and `loss(out, target)` (their composition `batch_loss(model, step,
device)`; split so that `elmnet.train_packed` can run K points' batches as one model),
`evaluate(model, split, device)`, `carried()` / `restore(carried)` for
state kept across batches, and the attributes `metric`, `higher_is_better`, `d_in`,
`n_out`, `data` (with `describe()`). A new task is a new module and one line in `TASKS`.

`shd` reads the Spiking Heidelberg Digits HDF5 files that `shd_adding` and
`shd_classify` (the task "shd": plain 20-word classification) build on; `enwik8`
serves the Enwik8 byte stream.
"""

from types import ModuleType

from elmbridge.errors import UserError
from elmnet.tasks import enwik8, shd_adding, shd_classify

TASKS: dict[str, ModuleType] = {"shd-adding": shd_adding, "enwik8": enwik8, "shd": shd_classify}


def task_module(name: str) -> ModuleType:
    """The module of task `name`, or a `UserError` naming the known tasks."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
