"""One natural-language instruction per Meta-World task, written from the task descriptions of the
Meta-World paper (Yu et al., 2019, appendix table of the 50 tasks). Meta-World has no language of its
own; the policy still cross-attends to these instruction tokens, as on RLBench.
"""

from __future__ import annotations

from evaluation.simulators.sim import UnknownTaskError

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and place it onto the peg",
    "basketball-v3": "dunk the basketball into the basket",
    "bin-picking-v3": "grasp the puck from one bin and place it into the other bin",
    "box-close-v3": "grasp the lid and close the box with it",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "bypass the wall and press the button from the top",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "bypass the wall and press the button",
    "coffee-button-v3": "push the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "rotate the dial 180 degrees",
    "disassemble-v3": "pick the nut off the peg",
    "door-close-v3": "close the door with its revolving joint",
    "door-lock-v3": "lock the door by rotating the lock clockwise",
    "door-open-v3": "open the door with its revolving joint",
    "door-unlock-v3": "unlock the door by rotating the lock counter-clockwise",
    "hand-insert-v3": "insert the gripper into the hole",
    "drawer-close-v3": "push and close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-open-v3": "rotate the faucet counter-clockwise",
    "faucet-close-v3": "rotate the faucet clockwise",
    "hammer-v3": "hammer the screw on the wall",
    "handle-press-side-v3": "press the handle down sideways",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up sideways",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever down 90 degrees",
    "pick-place-wall-v3": "pick the puck, bypass the wall and place the puck at the goal",
    "pick-out-of-hole-v3": "pick up the puck from the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "get the plate out of the cabinet",
    "plate-slide-back-side-v3": "get the plate out of the cabinet sideways",
    "peg-insert-side-v3": "insert the peg sideways into the hole",
    "peg-unplug-side-v3": "unplug the peg sideways",
    "soccer-v3": "kick the soccer ball into the goal",
    "stick-push-v3": "grasp the stick and push the box with it",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "bypass the wall and push the puck to the goal",
    "push-back-v3": "pull the puck back to the goal",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "bypass the wall and reach the goal",
    "shelf-place-v3": "pick the puck and place it onto the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "push and open the window",
    "window-close-v3": "push and close the window",
}


def instruction_for(task: str) -> str:
    """The instruction of a task; ``UnknownTaskError`` names the known tasks for a typo."""
    try:
        return INSTRUCTIONS[task]
    except KeyError:
        raise UnknownTaskError(
            f"no instruction for task {task!r}; known tasks: {', '.join(sorted(INSTRUCTIONS))}"
        ) from None
