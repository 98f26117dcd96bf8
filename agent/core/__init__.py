"""The pure decision: metrics, rules, policies and sizing, guardrails and state, and ``decide``
(plan, conclude, remember). No I/O and no clock of its own, so the daemon and the simulator run
the very same code."""
