"""Training one configuration, without Ray: the typed ``config``, ``losses``, the ``engine`` (one
epoch, one pass of predictions), the GPU ``fast_path``, the ``gpu_memory`` estimate and the trial
loop with its checkpoint format (``trainable``)."""
