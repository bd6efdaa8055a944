"""One annotator's labelling session: which review to show next, and saving a label or a skip.

The HTTP layer (review/server.py) is transport only: it calls `state`, `label` and `skip` and sends
back what they return. Here:
- the next review is the most valuable one (the queue's order) that nobody has labelled, that no
  other annotator holds a claim on, and that this annotator has not skipped; showing it claims it
  (a lease of `claim_ttl_s`), so annotators working side by side, in one process or several, are
  never shown the same review;
- a label is written under the cross-process lock, refused (409) when anyone labelled the review
  already or another annotator holds it;
- labelling is blind by default: the page gets the review's id and text only, not the model's
  guess, which would anchor the annotator (`review.show_model_guess: true` shows it).
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from typing import Any

from reviewpipe import SENTIMENTS
from reviewpipe.review.queue import BLIND_KEYS
from reviewpipe.review.store import AlreadyLabelled, Claims, LabelStore, utc_now


class ReviewSession:
    """What one annotator has left to do; thread-safe (the server handles requests in threads)."""

    def __init__(
        self, queue: list[dict[str, Any]], store: LabelStore, claims: Claims, *, show_model_guess: bool
    ) -> None:
        self.queue = queue
        self.store = store
        self.claims = claims
        self.show_model_guess = show_model_guess
        self.by_id = {str(r["review_id"]): r for r in queue}
        self.labelled: set[str] = set()
        self.labelled_here = 0
        self.skipped: set[str] = set()
        self.current: str | None = None
        self._lock = threading.Lock()
        self.state()

    @property
    def annotator(self) -> str:
        return self.store.annotator

    def _view(self, key: str | None) -> dict[str, Any] | None:
        if key is None:
            return None
        record = self.by_id[key]
        return dict(record) if self.show_model_guess else {k: record[k] for k in BLIND_KEYS}

    def _progress(self, held_by_others: int) -> dict[str, int]:
        total = len(self.by_id)
        return {
            "total": total,
            "labelled": len(self.labelled),
            "labelled_this_session": self.labelled_here,
            "skipped": len(self.skipped),
            "held_by_others": held_by_others,
            "remaining": total - len(self.labelled) - len(self.skipped),
        }

    def _advance(self) -> dict[str, Any]:
        """Under the store's lock: refresh who labelled and who holds what, keep or claim this
        annotator's next review, and return the page's state."""
        now = utc_now()
        claims = self.claims.read(now)
        self.labelled = self.store.labelled_ids() & set(self.by_id)
        self.skipped -= self.labelled
        mine = [k for k in claims if Claims.holder(claims, k) == self.annotator]
        nxt = None
        if (
            self.current is not None
            and self.current not in self.labelled | self.skipped
            and Claims.holder(claims, self.current) in (None, self.annotator)
        ):
            nxt = self.current  # a reload shows the same review
        if nxt is None:
            nxt = next(
                (
                    key
                    for key in (str(r["review_id"]) for r in self.queue)
                    if key not in self.labelled
                    and key not in self.skipped
                    and Claims.holder(claims, key) in (None, self.annotator)
                ),
                None,
            )
        Claims.release(claims, [k for k in mine if k != nxt])
        if nxt is not None:
            self.claims.claim(claims, nxt, self.annotator, now)
        self.claims.write(claims)
        self.current = nxt
        held = sum(
            1
            for key, claim in claims.items()
            if key in self.by_id and claim["annotator"] != self.annotator and key not in self.labelled
        )
        return {
            "review": self._view(nxt),
            "progress": self._progress(held),
            "annotator": self.annotator,
            "blind": not self.show_model_guess,
        }

    def state(self) -> dict[str, Any]:
        with self._lock, self.store.lock.held():
            return self._advance()

    def label(self, review_id: Any, label: Any) -> tuple[HTTPStatus, dict[str, Any]]:
        if label not in SENTIMENTS or isinstance(label, bool):
            return HTTPStatus.BAD_REQUEST, {
                "error": f"label must be one of {list(SENTIMENTS)}, got {label!r}"
            }
        key = str(review_id)
        with self._lock, self.store.lock.held():
            if key not in self.by_id:
                return HTTPStatus.NOT_FOUND, {
                    "error": f"review {review_id!r} is not in the queue",
                    **self._advance(),
                }
            holder = Claims.holder(self.claims.read(utc_now()), key)
            if holder not in (None, self.annotator):
                return HTTPStatus.CONFLICT, {
                    "error": f"review {review_id!r} is being labelled by {holder}",
                    **self._advance(),
                }
            try:
                record = self.store.append(self.by_id[key]["review_id"], label)  # durable before we move on
            except AlreadyLabelled as exc:
                return HTTPStatus.CONFLICT, {"error": str(exc), **self._advance()}
            self.labelled_here += 1
            self.skipped.discard(key)
            return HTTPStatus.OK, {"saved": record, **self._advance()}

    def skip(self, review_id: Any) -> tuple[HTTPStatus, dict[str, Any]]:
        key = str(review_id)
        with self._lock, self.store.lock.held():
            if key not in self.by_id:
                return HTTPStatus.NOT_FOUND, {
                    "error": f"review {review_id!r} is not in the queue",
                    **self._advance(),
                }
            if key not in self.labelled:
                self.skipped.add(key)
            return HTTPStatus.OK, self._advance()
