"""The LLM advisor: when to ask and within which envelope (:mod:`.gate`, pure), the conversation
and its tools (:mod:`.advisor`, :mod:`.protocol`) over an OpenAI-compatible endpoint
(:mod:`.client`), what that server says about itself (:mod:`.server`), and ``docktor llm
check`` (:mod:`.check`)."""
