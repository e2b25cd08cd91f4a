"""Live settings, one path: `request()` queues a change from any thread, the frame loop applies it.

Hotkeys, the config-file watcher and the control page all call `Pipeline.request(**changes)`, which checks
the values at the boundary and queues them; between two frames the loop calls `apply_pending()`, which
merges the queue into one `RunConfig` and hands it to `apply_config`: live settings reach the stages there
(under the front's lock, so a change lands between two frames of the front thread too), the rest are
reported as needing a restart. A harmonizer turned on later is built by the loader and adopted here.

`LiveSettings` is a part of `vcam.pipeline.Pipeline` (a mixin): it works on the pipeline's stages and
settings (`config`, `size`, `segmenter`, `backgrounds`, `harmonize`, `outputs`, `_reference`, `_loader`,
`_front_lock`, `_stage()`), and owns the queue (`_init_requests()`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict

from vcam.background import Backgrounds
from vcam.config import LIVE_KEYS, RunConfig, validate
from vcam.controls import changed_settings
from vcam.errors import first_line
from vcam.reference import check_reference, reference_mask
from vcam.segment import Segmenter

log = logging.getLogger("vcam.pipeline")  # the pipeline's log: one name for the whole frame loop

NEXT_BACKGROUND = "next_background"  # a request that is an action, not a RunConfig field


class LiveSettings:
    """`request`, `settings`, `apply_pending`, `apply_config`, `next_background` of the pipeline."""

    def _init_requests(self) -> None:
        self._requests: list[dict] = []
        # The batch the frame loop is applying now: still part of `settings` until it is in `config` (a
        # segmenter swap takes tens of milliseconds, and a reader then must not see the old value).
        self._applying: list[dict] = []
        self._requests_lock = threading.Lock()  # held for a list append or swap, nothing else

    def request(self, **changes) -> None:
        """Queue a setting change; it is applied between two frames. Returns at once; any thread.

        Args:
            **changes: RunConfig fields with their new values (live ones apply, others are reported as
                needing a restart), or `next_background=True`.

        Raises:
            ValueError: an unknown setting, a value out of range or a reference region outside the frame
                (checked here, at the boundary, so that a bad value never reaches a running stage nor
                takes the other changes queued beside it down with it).
            FileNotFoundError: a reference mask image that does not exist.
        """
        unknown = set(changes) - set(asdict(self.config)) - {NEXT_BACKGROUND}
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; live ones: {', '.join(LIVE_KEYS)}")
        fields = {k: v for k, v in changes.items() if k != NEXT_BACKGROUND}
        if fields:
            validate(self.settings.replace(**fields))
            if fields.get("reference") is not None:  # what only the frame can tell, before it is queued
                check_reference(fields["reference"], self.size)
        with self._requests_lock:
            self._requests.append(dict(changes))

    @property
    def settings(self) -> RunConfig:
        """The settings as they will be once the queued requests are applied (what a key toggles from)."""
        with self._requests_lock:
            pending = self._applying + self._requests
        merged = {}
        for change in pending:
            merged.update({k: v for k, v in change.items() if k != NEXT_BACKGROUND})
        return self.config.replace(**merged) if merged else self.config

    def apply_pending(self) -> None:
        """Apply the queued requests (the frame loop calls this between frames)."""
        if not self._requests and not self._loader.loading:  # every frame: the common case is two reads
            return
        with self._requests_lock:
            pending, self._requests = self._requests, []
            self._applying = pending
        merged, cycle = {}, False
        for change in pending:
            cycle = cycle or bool(change.get(NEXT_BACKGROUND))
            merged.update({k: v for k, v in change.items() if k != NEXT_BACKGROUND})
        if merged:
            try:
                self.apply_config(self.config.replace(**merged))
            except Exception as exc:  # a live change must never stop the stream
                log.error("settings not applied: %s", first_line(exc))
        with self._requests_lock:
            self._applying = []
        if cycle:
            self.next_background()
        self._adopt_loaded_harmonizer()

    def next_background(self) -> None:
        with self._front_lock:
            self.backgrounds.next()
        if self.harmonize is not None:
            self.harmonize.reset()  # a new background is a new scene for the temporal statistics

    def apply_config(self, new: RunConfig) -> None:
        """Apply changed settings now: live ones to the stages, the rest reported as needing a restart.

        Called from the frame loop only (`apply_pending`), or before `run()`.
        """
        with self._front_lock:  # between two frames of the front thread too
            self._apply_config(new)

    def _apply_config(self, new: RunConfig) -> None:
        live, restart = changed_settings(self.config, new)
        if "reference" in live and not self._set_reference(new.reference):
            new = new.replace(reference=self.config.reference)
            live.pop("reference")
        if "segmentation_model" in live:
            segmenter = Segmenter(new.segmentation_model, new.segmenter_model, smoothing=new.mask_smoothing)
            self.segmenter.close()
            self.segmenter = segmenter
        if "background" in live and not self._swap_backgrounds(new.background):
            new = new.replace(background=self.config.background)
            live.pop("background")
        if "harmonize" in live:
            self._set_harmonize(new)
        if self.harmonize is not None:
            self.harmonize.configure(smoothing=live.get("smoothing"), strength=live.get("strength"),
                                     refresh_hz=live.get("refresh_hz"))
        if live.get("smoothing"):
            self.last_smoothing = live["smoothing"]
        if "mask_smoothing" in live:
            self.segmenter.smoothing = new.mask_smoothing
        if "split" in live and self.outputs.preview is not None:
            self.outputs.preview.split = new.split
        if live:
            log.info("config applied: %s", ", ".join(f"{k}={v}" for k, v in live.items()))
        if restart:
            log.warning("config: %s changed; restart vcam to apply", ", ".join(restart))
        self.config = new

    def _set_reference(self, spec: str | None) -> bool:
        """Build the reference mask for the frame; a failure (an unreadable mask image) changes nothing else."""
        try:
            self._reference = reference_mask(spec, self.size)
        except Exception as exc:
            log.error("reference not changed: %s", first_line(exc))
            return False
        if self.harmonize is not None:
            self.harmonize.reference = self._reference
        return True

    def _swap_backgrounds(self, specs: list[str]) -> bool:
        try:
            backgrounds = Backgrounds(specs)
        except Exception as exc:
            log.error("background not changed: %s", first_line(exc))
            return False
        self.backgrounds.close()
        self.backgrounds = backgrounds
        if self.harmonize is not None:
            self.harmonize.reset()
        return True

    def _set_harmonize(self, new: RunConfig) -> None:
        if self.harmonize is not None:
            self.harmonize.enabled = new.harmonize
            log.info("harmonization %s", "on" if new.harmonize else "off")
        elif new.harmonize and not self._loader.loading:
            # Loading an engine and its weights takes seconds: built beside the loop, adopted when ready.
            log.info("loading the harmonizer...")
            self._loader.start(new)

    def _adopt_loaded_harmonizer(self) -> None:
        if not self._loader.loading:  # every frame: the common case is one attribute read
            return
        try:
            harmonizer = self._loader.take()
        except Exception as exc:
            log.error("cannot start harmonization: %s", first_line(exc))
            self.config = self.config.replace(harmonize=False)
            return
        if harmonizer is None:
            return
        self.harmonize = self._stage(harmonizer, self.config)
        log.info("harmonization on (%s on %s)", self.harmonize.mode, self.harmonize.status()["backend"])
