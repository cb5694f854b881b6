"""Stand-in ``rlbench.tasks``: one module per PerAct task, each with its camel-case task class.

The modules are registered in ``sys.modules`` (``rlbench.tasks.close_jar`` etc.) so that
``importlib.import_module("rlbench.tasks.<name>")`` and ``from rlbench.tasks import CloseJar`` work as
in RLBench. The variation counts are this stand-in's own copy of RLBench's ``variation_count()``.
"""

import sys
import types

from rlbench.backend.task import Task

_VARIATIONS = {
    "open_drawer": 3,
    "slide_block_to_color_target": 4,
    "sweep_to_dustpan_of_size": 2,
    "meat_off_grill": 2,
    "turn_tap": 2,
    "put_item_in_drawer": 3,
    "close_jar": 20,
    "reach_and_drag": 20,
    "stack_blocks": 60,
    "light_bulb_in": 20,
    "put_money_in_safe": 3,
    "place_wine_at_rack_location": 3,
    "put_groceries_in_cupboard": 9,
    "place_shape_in_shape_sorter": 5,
    "push_buttons": 50,
    "insert_onto_square_peg": 20,
    "stack_cups": 20,
    "place_cups": 3,
    "reach_target": 20,
}


def _register(name: str, variations: int) -> type:
    class_name = "".join(w[0].upper() + w[1:] for w in name.split("_"))
    module_name = f"{__name__}.{name}"
    cls = type(class_name, (Task,), {"VARIATIONS": variations, "__module__": module_name})
    module = types.ModuleType(module_name)
    setattr(module, class_name, cls)
    sys.modules[module_name] = module
    globals()[class_name] = cls
    return cls


for _name, _count in _VARIATIONS.items():
    _register(_name, _count)
