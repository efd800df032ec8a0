# Copyright: inferfleet contributors
# Apache License 2.0
"""Filters for the docker_engine role; the logic lives in inferfleet.dockercfg (unit-tested)."""

from ansible.errors import AnsibleFilterError

IMPORT_ERROR = None
try:
    from inferfleet import dockercfg
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    dockercfg = None
    IMPORT_ERROR = exc


def _require():
    if dockercfg is None:
        raise AnsibleFilterError("the inferfleet Python package is not importable on the controller: %s (install "
                                 "it with `pip install inferfleet`, or run in the inferfleet EE)" % IMPORT_ERROR)


def inferfleet_daemon_settings(options, **kwargs):
    _require()
    return dockercfg.daemon_settings(options=options, **kwargs)


def inferfleet_merge_daemon_json(current_text, wanted):
    _require()
    return dockercfg.merge_daemon_json(current_text, wanted)


def inferfleet_check_docker_info(info, wanted):
    _require()
    return dockercfg.check_docker_info(info, wanted)


def inferfleet_image_sources(images, mirror="", built=()):
    _require()
    return dockercfg.image_sources(list(images), mirror or "", list(built or []))


def inferfleet_build_keys(image_infos):
    _require()
    return dockercfg.build_keys(list(image_infos or []))


def inferfleet_image_builds(builds, images, mirror=""):
    _require()
    return dockercfg.image_builds(list(builds or []), list(images), mirror or "")


def inferfleet_packages_to_install(wanted, dpkg_status):
    _require()
    if isinstance(dpkg_status, list):
        dpkg_status = "\n".join(dpkg_status)
    return dockercfg.packages_to_install(list(wanted), dpkg_status or "")


class FilterModule:
    def filters(self):
        return {"daemon_settings": inferfleet_daemon_settings,
                "merge_daemon_json": inferfleet_merge_daemon_json,
                "check_docker_info": inferfleet_check_docker_info,
                "image_sources": inferfleet_image_sources,
                "image_builds": inferfleet_image_builds,
                "build_keys": inferfleet_build_keys,
                "packages_to_install": inferfleet_packages_to_install}
