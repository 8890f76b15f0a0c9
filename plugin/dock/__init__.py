"""The dock: its widget, layout, inputs, requests, curves and install flow."""
