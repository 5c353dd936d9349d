# otel_crm's auto_instrumentation/sitecustomize.py for the OpenTelemetry Operator's Python injection.
#
# deploy/operator/build_autoinstrumentation.py writes this file over the one shipped by
# opentelemetry-instrumentation (two lines: import initialize, call it), after checking that the
# upstream file is still exactly that. The operator puts
# /otel-auto-instrumentation-python/opentelemetry/instrumentation/auto_instrumentation first on
# PYTHONPATH, so `site` imports this file when the application's interpreter starts.
#
# Why it exists: without OTEL_PYTHON_DISTRO / OTEL_PYTHON_CONFIGURATOR, initialize() configures the
# FIRST distro and configurator entry points found, in sys.path and directory-listing order.
# Under pip installs otel_crm_select.pth sets both, but .pth files are only processed in site
# directories, never from PYTHONPATH. So when upstream opentelemetry-distro is also importable (in
# this folder, or in a directory of the application's own PYTHONPATH, which the operator puts
# between its two entries), it could be picked instead of otel_crm. Defaults only: a value set in
# the Instrumentation resource or the pod spec still wins.
import os

os.environ.setdefault("OTEL_PYTHON_DISTRO", "otel_crm")
os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", "otel_crm")

from opentelemetry.instrumentation.auto_instrumentation import initialize

initialize()
