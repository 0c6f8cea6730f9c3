"""Running: the launchers (tritonserver, the edge, a local cluster), the API key, avatars placed
on replicas and their memory budgets, the avatars CLI. What ``make serve``, ``make cluster`` and
``synctalk-avatars`` run; builds on ``synctalk_build``."""
