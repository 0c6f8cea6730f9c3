"""What the SDK and the server share, numpy at most: the tensor contract (names, shapes, dtypes,
limits, messages), the request's wire layout (``messages``), the error types of the reference's
categories (``errors``), and SyncTalk_2D's face geometry and frame loop. Imports nothing of the
project."""
