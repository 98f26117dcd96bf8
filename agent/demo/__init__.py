"""``docktor demo``: the whole pipeline on this machine with a real NATS JetStream and real workers."""
