"""Stand-in for ``rlbench.backend.exceptions`` (same names as RLBench's)."""


class BoundaryError(Exception):
    pass


class WaypointError(Exception):
    pass


class DemoError(Exception):
    pass


class InvalidActionError(Exception):
    pass


class TaskEnvironmentError(Exception):
    pass
