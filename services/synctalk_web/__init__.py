"""A web page to try an avatar: ``synctalk-client web --url HOST:8001 [--port 7860]``.

The page talks to this process only; this process talks to Triton through the SDK (the browser
never reaches Triton). Two tabs:

- **Render**: a model id from the repository, an audio upload (any format ``render`` reads) or a
  recording from the microphone, start frame and loop back; the render runs here
  (``render.render_video``), the page shows its progress, plays and offers the MP4, and the
  server's time per stage.
- **Live**: the microphone, or an audio file played as a live source, streams to an avatar over a
  WebSocket; this process feeds a ``LiveStream`` and sends each frame back as it comes, and the
  page shows them on the audio's clock (the audio delayed by the measured delay).

The library is aiohttp: one package that is an HTTP server, a WebSocket server and a multipart
reader, with no ASGI server beside it and nothing fetched at run time. Gradio, which SyncTalk_2D's
own page uses, would bring a web framework, an ASGI server and a front-end bundle for a page of
two forms, and its components have no way to show frames at 25 fps as a stream delivers them.
It is the ``web`` extra: the server image has none of it.
"""
