"""``docktor.yaml``: the models (:mod:`.model`), the loader (:mod:`.load`) and older formats (:mod:`.compat`)."""
