"""Loading full-precision models from every form users have them in.

Names (built-in, torchvision, ``timm:``), ``.pth``/``.pt``/``.th``/``.bin``
checkpoints (bare or wrapped state_dicts, legacy or zip), ``.safetensors``
and, with consent, whole pickled modules; bare state_dicts are matched to
their architecture by key names and shapes.
"""

from irconvert.io.checkpoint_file import load_state_dict_file
from irconvert.io.load import LoadedModel, load_model
from irconvert.io.recognize import recognize

__all__ = ["LoadedModel", "load_model", "load_state_dict_file", "recognize"]
