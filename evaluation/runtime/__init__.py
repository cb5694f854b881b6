"""Running evaluations: one episode, the Ray actors and policy server, the coordinator that fans episodes out
with fault containment, checkpoints shipped through the object store, reports and rollout videos."""
