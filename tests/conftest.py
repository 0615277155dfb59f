from hub_fixtures import *  # noqa
