"""Building: the stand-in models, trained checkpoints imported, a profile's model repository
rendered, avatars installed into the avatar store, the native library the server preloads.
What ``make models``, ``make render`` and ``synctalk-avatars add`` run; imports the shared
contract, the SDK and the server's preprocessing, never ``synctalk_ops``."""
