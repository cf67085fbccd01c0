"""rknnlink.client: the modern host API over the board daemon.

    with Board.connect("127.0.0.1:50051") as board:
        session = board.load_model(open("model.rknn", "rb").read())
        outputs = session.run([image])
"""

from rknnlink.client.board import Board, DeviceInfo, PerfReport, Session
from rknnlink.client.data import Pipeline
from rknnlink.client.errors import BoardError, IncompatibleVersionError, RemoteRknnError, SessionLostError

__all__ = ["Board", "DeviceInfo", "PerfReport", "Pipeline", "Session", "BoardError", "IncompatibleVersionError",
           "RemoteRknnError", "SessionLostError"]
