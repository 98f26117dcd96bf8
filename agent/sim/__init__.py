"""The simulator: load traces replayed message by message through the production decision code
(:mod:`.simulator`), the peers it is compared with (:mod:`.baselines`, :mod:`.kube`), what it
offers by name (:mod:`.catalog`), and ``docktor bench`` (:mod:`.bench`, :mod:`.grid`)."""
