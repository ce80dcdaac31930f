"""Request bodies of both APIs, as pydantic models: types, ranges and defaults in one place.

KAITO's ``/chat`` keeps KAITO's field names and defaults (its FastAPI
``UnifiedRequestModel``), including extra ``generate_kwargs`` forwarded to
``generate``, but only those that are plain generation settings. The OpenAI
models follow the OpenAI API reference; unknown fields are refused (a typo such
as ``temprature`` would otherwise be silently ignored), except a few that
clients send routinely and that do not change the output.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_BEAMS = 8
MAX_CHOICES = 8
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256  # characters per stop string: each is searched in the text at every token
MAX_PROMPTS = 32  # prompts in one /v1/completions request (each is a generation, times n)

# generate_kwargs beyond KAITO's own fields that /chat forwards to generate().
# Anything else (streamer, output_scores, return_dict_in_generate, ...) would
# change what generate returns or run arbitrary objects.
KAITO_EXTRA_GENERATE_KWARGS = frozenset({
    "bad_words_ids", "begin_suppress_tokens", "diversity_penalty", "encoder_repetition_penalty",
    "epsilon_cutoff", "eta_cutoff", "exponential_decay_length_penalty", "forced_bos_token_id",
    "forced_eos_token_id", "length_penalty", "max_time", "min_p", "no_repeat_ngram_size",
    "num_beam_groups", "renormalize_logits", "remove_invalid_values", "sequence_bias", "suppress_tokens",
    "use_cache", "num_return_sequences",
})


def check_stop_strings(value: Optional[Union[str, list[str]]]) -> Optional[list[str]]:
    """A list of at most MAX_STOP_STRINGS non-empty stop strings of at most MAX_STOP_LENGTH characters."""
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if len(stops) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed, not {len(stops)}")
    if any(s == "" for s in stops):
        raise ValueError("stop strings must not be empty")
    longest = max(len(s) for s in stops) if stops else 0
    if longest > MAX_STOP_LENGTH:
        raise ValueError(f"a stop string may be at most {MAX_STOP_LENGTH} characters, not {longest}")
    return stops


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --- KAITO /chat ------------------------------------------------------------


class KaitoMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str


class GenerateKwargs(BaseModel):
    """KAITO's generate_kwargs and their defaults (max_length counts prompt + new tokens)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    max_length: int = Field(200, ge=1)
    min_length: int = Field(0, ge=0)
    do_sample: bool = True
    early_stopping: bool = False
    num_beams: int = Field(1, ge=1, le=MAX_BEAMS)
    temperature: float = Field(1.0, ge=0)
    top_k: int = Field(10, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    typical_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    pad_token_id: Optional[int] = Field(None, ge=0)
    eos_token_id: Optional[Union[int, list[int]]] = None
    max_new_tokens: Optional[int] = Field(None, ge=1)
    min_new_tokens: Optional[int] = Field(None, ge=0)
    stop_strings: Optional[Union[str, list[str]]] = None

    @field_validator("stop_strings")
    @classmethod
    def _stops(cls, value: Optional[Union[str, list[str]]]) -> Optional[Union[str, list[str]]]:
        check_stop_strings(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> "GenerateKwargs":
        if self.do_sample and self.temperature == 0:
            raise ValueError("temperature must be > 0 when do_sample is true (set do_sample to false for greedy decoding)")
        unknown = sorted(set(self.model_extra or {}) - KAITO_EXTRA_GENERATE_KWARGS)
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: not a supported generation setting; supported extra keys: "
                + ", ".join(sorted(KAITO_EXTRA_GENERATE_KWARGS))
            )
        if (self.model_extra or {}).get("num_return_sequences", 1) != 1:
            raise ValueError("num_return_sequences: only 1 is supported; send several requests instead")
        return self


class KaitoChatRequest(BaseModel):
    """KAITO's UnifiedRequestModel. Unknown top-level fields are ignored, as FastAPI did."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: Optional[str] = None
    messages: Optional[list[KaitoMessage]] = None
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool = False
    prefix: Optional[str] = None
    handle_long_generation: Optional[Literal["hole"]] = None
    generate_kwargs: Optional[GenerateKwargs] = None


# --- OpenAI -----------------------------------------------------------------


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class SamplingRequest(_Strict):
    model: Optional[str] = None
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=-1, description="vLLM extension; 0 or -1 turns it off")
    min_tokens: int = Field(0, ge=0, description="vLLM extension")
    repetition_penalty: Optional[float] = Field(None, gt=0, description="vLLM extension")
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: Optional[Union[str, list[str]]] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    seed: Optional[int] = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: Optional[dict[str, float]] = None
    # Sent by common clients; accepted and ignored (they do not change the output).
    user: Optional[str] = None
    metadata: Optional[Any] = None
    store: Optional[bool] = None
    service_tier: Optional[str] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Optional[Union[str, list[str]]]) -> Optional[list[str]]:
        return check_stop_strings(value)

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: Optional[dict[str, float]]) -> Optional[dict[str, float]]:
        for key, bias in (value or {}).items():
            if not key.lstrip("-").isdigit():
                raise ValueError(f"keys must be token ids, got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias for token {key} must be between -100 and 100, got {bias}")
        return value

    @property
    def stop_list(self) -> list[str]:
        return list(self.stop or [])  # normalised to a list by the validator

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingRequest):
    prompt: Union[str, list[str], list[int], list[list[int]]]

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not all(isinstance(x, int) for x in value) and len(value) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request, not {len(value)}; send several requests")
        return value
    max_tokens: Optional[int] = Field(16, ge=1)
    echo: bool = False
    logprobs: Optional[int] = None
    best_of: Optional[int] = None
    suffix: Optional[str] = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: Optional[str] = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[ContentPart]]] = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    tools: Optional[list[Any]] = None
    tool_choice: Optional[Any] = None
    parallel_tool_calls: Optional[bool] = None
    functions: Optional[list[Any]] = None
    function_call: Optional[Any] = None
    response_format: Optional[dict[str, Any]] = None
