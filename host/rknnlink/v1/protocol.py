"""Facts of the rknnlink.v1 protocol that both ends must agree on, in one place: versions, the call
metadata keys, and the limits every decoder enforces before it allocates anything.

Shared by the host (rknnlink.client) and the board (rknnlink_server); imports nothing but the standard library.
"""

from __future__ import annotations

# Bumped on any incompatible change of proto/rknnlink/v1 or the call metadata; checked in the handshake.
# 2: sessions belong to their client (client id in every call's metadata), CreateSession.model_proof.
# 3: one data plane: inference only as length-prefixed datawire frames, direct or through the Relay stream
#    (Run and RunStream are gone).
PROTOCOL_VERSION = 3
MIN_CLIENT_PROTOCOL = 3   # the oldest client a daemon serves
MIN_DAEMON_PROTOCOL = 3   # the oldest daemon a client talks to

# Call metadata (lower-case, as gRPC requires).
MD_CLIENT_ID = "rknnlink-client-id"          # the client_id from Hello; scopes every session call
MD_OPERATOR_TOKEN = "rknnlink-operator-token"  # GetStats of every client's sessions (the daemon's operator)
MD_SESSION_ID = "rknnlink-session-id"        # the session a Relay stream carries frames for
MD_RELAY_DEPTH = "rknnlink-relay-depth"      # "1": the client keeps one frame in flight (Session.run)
# Trailing metadata of a failed call.
MD_RKNN_CODE = "rknn-error-code"
MD_RKNN_NAME = "rknn-error-name"
MD_KIND = "rknnlink-error-kind"

# Limits of one inference request, on every path (every data-plane frame, on either carrier).
MAX_TENSORS = 256         # inputs (and outputs) of one request
MAX_DIMS = 16             # dimensions of one tensor
MAX_CLIENT_TEXT = 256     # characters of a client-supplied name or version the daemon keeps or logs
