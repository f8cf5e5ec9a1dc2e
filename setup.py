"""Package discovery across the three source roots (metadata lives in pyproject.toml).

``pacsd`` is a PEP 420 namespace spread over server/, client_sdk/ and addins/.
setuptools' ``packages.find`` with several ``where`` roots maps every package to the
first root, so each package is mapped to its own folder here instead.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOTS = ("server", "client_sdk", "addins")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in ROOTS:
    for pkg in find_namespace_packages(where=root, include=["pacsd.*"]):
        packages.append(pkg)
        package_dir[pkg] = str(Path(root, *pkg.split(".")))

setup(packages=packages, package_dir=package_dir)
