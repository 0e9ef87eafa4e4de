"""Tokenized model input: a sequence of chunks, each a run of token ids.

ModelInput is immutable (as in the Tinker SDK): every ``append*`` method returns a new ModelInput
and leaves the original untouched, in both spellings:

=========================  ===============================  =========================
MinT                       Tinker                           meaning
=========================  ===============================  =========================
``context_length()``       ``length`` (property)            total number of tokens
``append_tokens(tokens)``  ``append_int(token)`` (one id)   tokens appended at the end
``append_chunks(chunks)``  ``append(chunk)`` (one chunk)    chunks appended at the end
=========================  ===============================  =========================
"""

from __future__ import annotations

from typing import Any, Iterable, List, Literal, Sequence, Union

from pydantic import Field
from typing_extensions import Annotated, TypeAlias

from mint.types._base import RequestModel

__all__ = ["EncodedTextChunk", "ModelInput", "ModelInputChunk", "TokenId"]

TokenId: TypeAlias = Annotated[int, Field(ge=0)]
"""A token id: an integer >= 0."""


def _as_token_list(tokens: Any) -> Any:
    """A numpy array or torch tensor of ids becomes a flat list of ints; anything else is kept."""
    if hasattr(tokens, "tolist") and hasattr(tokens, "shape"):
        return tokens.reshape(-1).tolist()
    if isinstance(tokens, tuple):
        return list(tokens)
    return tokens


class EncodedTextChunk(RequestModel):
    """A run of already-tokenized text."""

    tokens: List[TokenId]
    """Token ids (ints >= 0)."""

    type: Literal["encoded_text"] = "encoded_text"
    """Chunk kind discriminator; always ``"encoded_text"``."""

    @property
    def length(self) -> int:
        """Number of tokens in the chunk."""
        return len(self.tokens)


ModelInputChunk: TypeAlias = EncodedTextChunk
"""Any chunk a ModelInput may hold (mint supports text tokens only)."""


class ModelInput(RequestModel):
    """Tokenized input to the model: a list of chunks, read in order.

    Example::

        prompt = types.ModelInput.from_ints(tokenizer.encode("Hello"))
        prompt = prompt.append_tokens([13, 198])       # a new ModelInput
        assert prompt.context_length() == prompt.length == len(prompt.to_ints())
    """

    chunks: List[ModelInputChunk]
    """Sequence of input chunks."""

    @classmethod
    def from_ints(cls, tokens: Union[Sequence[int], Any]) -> "ModelInput":
        """Create a ModelInput holding one chunk with ``tokens``.

        ``tokens``: a sequence of ints >= 0, or a 1-D numpy array / torch tensor of ids.
        """
        return cls(chunks=[EncodedTextChunk(tokens=_as_token_list(tokens))])

    @classmethod
    def empty(cls) -> "ModelInput":
        """Create a ModelInput with no chunks (length 0)."""
        return cls(chunks=[])

    def to_ints(self) -> List[int]:
        """All token ids of all chunks, concatenated in order."""
        return [token for chunk in self.chunks for token in chunk.tokens]

    @property
    def length(self) -> int:
        """Total number of tokens (Tinker spelling of ``context_length()``)."""
        return sum(chunk.length for chunk in self.chunks)

    def context_length(self) -> int:
        """Total number of tokens the input occupies in the context."""
        return self.length

    def append(self, chunk: ModelInputChunk) -> "ModelInput":
        """Return a new ModelInput with ``chunk`` added at the end (Tinker spelling)."""
        return self.append_chunks([chunk])

    def append_chunks(self, chunks: Iterable[ModelInputChunk]) -> "ModelInput":
        """Return a new ModelInput with ``chunks`` added at the end; ``self`` is unchanged."""
        return type(self)(chunks=[*self.chunks, *chunks])

    def append_tokens(self, tokens: Union[Sequence[int], Any]) -> "ModelInput":
        """Return a new ModelInput with ``tokens`` (ids >= 0) added at the end as one new chunk."""
        return self.append(EncodedTextChunk(tokens=_as_token_list(tokens)))

    def append_int(self, token: int) -> "ModelInput":
        """Return a new ModelInput with the single token id ``token`` added at the end (Tinker spelling)."""
        return self.append_tokens([token])
