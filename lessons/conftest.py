"""nbval settings for the lessons.

stderr carries progress bars and library warnings whose text changes from machine to machine;
what a lesson *shows* goes to stdout and rich outputs, and those are compared.
"""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr", "text/html", "application/javascript",
                                   "application/vnd.jupyter.widget-view+json")
