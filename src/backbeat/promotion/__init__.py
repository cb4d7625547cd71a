"""Native promotion of artists' music: booking, synthetic listening data, features, model, scores.

Layers inside the package point down: ``vocabulary`` → ``models``/``schemas`` → ``service``;
``synthetic`` → ``features`` → ``pipeline`` → ``training``/``registry`` → ``scoring``.
"""
