"""Sizes and limits of the wire protocol, in one place for every service (site agent, key holder, witness).

Large payloads are streamed in chunks of :data:`CHUNK_BYTES`, so no message needs more than
:data:`MAX_MESSAGE_BYTES`; servers and channels refuse anything larger at the gRPC layer.
"""

from __future__ import annotations

#: Bytes per chunk of a streamed array, result block, ciphertext or aggregate.
CHUNK_BYTES = 1 << 20
#: Largest single gRPC message either side accepts (a chunk plus its framing, with room to spare).
MAX_MESSAGE_BYTES = 8 << 20
#: Largest result block (or encrypted aggregate) a receiver reassembles.
MAX_BLOCK_BYTES = 1 << 31
#: Variants per manifest chunk of a Describe stream.
MANIFEST_CHUNK_VARIANTS = 20_000
#: Named input arrays per task, elements per array, and characters per name.
MAX_ARRAYS = 16
MAX_ARRAY_ELEMENTS = 50_000_000
MAX_NAME_LENGTH = 256
#: Channel and server options that apply the message limit.
MESSAGE_OPTIONS = (("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES))
