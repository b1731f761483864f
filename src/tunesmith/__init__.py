"""tunesmith: fine-tuning made easy and fast.

    import tunesmith
    run = tunesmith.finetune("reviews.csv", method="lora", epochs=3)
    run.metrics["test"]["accuracy"]
    run.predict(["a warm, funny, beautifully acted film"])
"""
from .api import Run, finetune, load
from .config import RunConfig
from .errors import TunesmithError

__all__ = ["Run", "RunConfig", "TunesmithError", "finetune", "load"]
__version__ = "0.1.0"
