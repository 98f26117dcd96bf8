"""The daemon around the core: one loop per service (:mod:`.loop`), the LLM beside it, never in
its way (:mod:`.beside`), the process, its control socket and run folder (:mod:`.daemon`,
:mod:`.control`, :mod:`.rundir`), the write-ahead decision log (:mod:`.decision_log`,
:mod:`.recorder`), saved state (:mod:`.persist`) and ``/metrics`` (:mod:`.metrics`)."""
