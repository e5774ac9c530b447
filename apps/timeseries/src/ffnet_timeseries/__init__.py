"""FFNet for long-term multivariate time-series forecasting (MetaMixer / FFNet paper §4.3, App. F.4)."""

from ffnet_timeseries.models import FFNetTS, create_model

__version__ = "0.1.0"
__all__ = ["FFNetTS", "create_model", "__version__"]
