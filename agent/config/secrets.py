"""Which environment variables hold Docktor's own credentials, so they never reach a replica.

Settings never hold a secret, only the *name* of the variable that does: ``llm.api_key_env``
(or the provider's default, ``OPENAI_API_KEY`` for ``provider: openai``) and every plugin setting
whose name ends in ``_env`` (``password_env``, ``token_env``, ``user_env`` ...), and ``mcp.token_env``
(the MCP server's bearer token, ``DOCKTOR_MCP_TOKEN`` unless set). The daemon passes
these names to every plugin in ``Context.secret_env``; the local executor leaves them out of a
replica's environment whatever ``env_passthrough`` says.
"""

from __future__ import annotations

from docktor.agent.config.model import DocktorConfig


def secret_env_names(config: DocktorConfig) -> frozenset[str]:
    names: set[str] = {config.mcp.token_env}
    if config.llm.api_key_env:
        names.add(config.llm.api_key_env)
    elif config.llm.provider != "none":
        # only here is the LLM client (and openai) worth importing: it knows the provider's default
        from docktor.agent.advisor.client import PROVIDER_DEFAULTS

        default = PROVIDER_DEFAULTS.get(config.llm.provider, (None, None, None))[2]
        if default:
            names.add(default)
    for svc in config.services:
        plugins = [spec.settings for spec in svc.sources]
        if svc.executor is not None:
            plugins.append(svc.executor.settings)
        for settings in plugins:
            for field in type(settings).model_fields:
                value = getattr(settings, field, None)
                if field.endswith("_env") and isinstance(value, str) and value:
                    names.add(value)
    return frozenset(names)
