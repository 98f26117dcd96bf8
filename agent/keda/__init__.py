"""``docktor keda``: KEDA's external scaler protocol served from the daemon's decisions (docs/keda.md)."""
