"""One intra-op thread for the app's tests: the CI machine (and the dev box) is shared, and with other jobs
running, waking a thread pool for the many small tensors here costs far more than it saves (measured 60x)."""

import torch

torch.set_num_threads(1)
