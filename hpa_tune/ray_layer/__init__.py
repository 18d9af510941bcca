"""Everything that runs on Ray (the only ``ray`` user): the Tuner wiring and the function a worker
runs (``runner``), ``resume``, ``remote_refit``, the ``truthful_search`` searcher, persistent ASHA
(``asha_state``), the callbacks (``tensorboard_callback``, ``bucket_sync``), the ``live_table``,
``faults`` and ``trial_errors``, joining the ``cluster``, ``cluster_resources`` and local runtime
``session``s."""
