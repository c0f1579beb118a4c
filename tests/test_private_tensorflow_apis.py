"""The private TensorFlow functions the package relies on, where TF has no public equivalent.

If a TensorFlow upgrade removes one, this test names it and its user, rather than an ImportError
surfacing deep inside the FLOPs count or the export.
"""

import importlib

import pytest
import tensorflow as tf

PRIVATE_APIS = [
    ("tensorflow.python.framework.convert_to_constants", "convert_variables_to_constants_v2",
     "efficientdet_tf/model/summary.py (FLOPs count)"),
    ("tensorflow.python.framework.convert_to_constants",
     "convert_variables_to_constants_v2_as_graph",
     "efficientdet_tf/inference/fold_batch_norm.py (batch norm folding for export)"),
]


@pytest.mark.parametrize("module_name, name, user", PRIVATE_APIS)
def test_private_tensorflow_api_is_still_there(module_name, name, user):
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        pytest.fail(f"TensorFlow {tf.__version__} has no module {module_name}, which {user} "
                    f"imports {name} from; find its new home or a public replacement.")
    assert callable(getattr(module, name, None)), (
        f"TensorFlow {tf.__version__} removed {module_name}.{name}, used by {user}; find its new "
        "home or a public replacement.")
