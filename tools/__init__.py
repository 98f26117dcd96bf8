"""Docktor's plugins: the SDK (:mod:`docktor.tools.sdk`), discovery (:mod:`docktor.tools.registry`),
and one module per system: ``sources/`` (queues and metric servers) and ``executors/`` (where
replicas run). A plugin imports only the SDK.
"""
