"""Human review (Augmented AI, locally): the low-confidence queue (queue.py), durable labels
(store.py), the labelling page and its JSON API (server.py, page.html), `reviewpipe review` (cli.py)."""
