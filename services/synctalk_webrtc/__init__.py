"""WebRTC delivery of live avatars: H.264 encoded on the Triton server, Opus, one clock.

A service of its own beside the edge (``synctalk-webrtc``; the page's server mounts the same
routes): it holds the peers and their timing, the SDK stays a thin Triton client.

- ``peer.AvatarPeer``: one viewer. Its speech source (the viewer's microphone track, or PCM an
  integrator pushes: a file, a TTS engine) goes to a live stream of the avatar asking for H.264
  (``synctalk_client.stream.LiveStream``, ``codec="h264"``); the stream's access units are sent as
  they are (``av.Packet``: aiortc packetizes, never decodes or encodes them again), the speech as
  the avatar's voice (Opus, by aiortc), both timestamped from the audio's sample count and paced by
  one ``timing.PlayoutClock``. The viewer's REMB sets the stream's bitrate, its PLI/FIR asks the
  stream for a key frame.
- ``service``: signalling as LiveTalking does it (``POST /offer`` with ``{"sdp", "type",
  "avatar"}`` -> ``{"sdp", "type": "answer"}``), ICE servers (STUN/TURN) from flags or the
  environment, a cap on peers, a peer that leaves ending its stream at once.
"""
