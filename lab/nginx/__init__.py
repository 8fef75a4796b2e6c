"""The nginx config renderer. Standard library only: ``nginx/Dockerfile`` copies this
package (and ``lab/__init__.py``) into the nginx image, where ``nginx/entrypoint.sh``
runs ``python3 -m lab.nginx``. ``tests/unit/lab/test_layout.py`` enforces the rule.
"""
