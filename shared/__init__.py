"""segment-export: Customer Insights segment exports into Autopilot lists.

All logic lives in this package so it can be imported and tested without the Functions host;
``function_app.py`` only wires triggers to it.
"""

__version__ = "0.1.0"
