from hub_fixtures import *  # noqa: F401,F403
from minilm_fixtures import *  # noqa: F401,F403
