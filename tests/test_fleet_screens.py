"""IT's fleet screens (/it) in Debian's real Chromium (Playwright, never a downloaded browser), at a
phone's 390x844 and a desk's 1440x900: no page scrolls sideways, axe finds nothing serious or
critical, the page stays small and fetches nothing from outside; IT changes a setting in the form
and a real headset (the firmware on the MicroPython unix port, over a real Mosquitto) confirms
it; a roll-out shows its progress and rolls back; each role is offered only what it may do."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest
from companion_helpers import Publisher, cue, running_companion, sqlite_url, wait_until
from fw_harness import runner_cmd
from sqlalchemy import update

from companion import fleet, fleet_view, users
from companion.db import devices
from firmware.headset import ota

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
SCREENS = ("devices", "config", "rollouts", "dead-letters", "people")
PAGE_BUDGET = 150 * 1024  # issue 15: page weight under 150 KB
SITE = "store-1"
# The headset runs as a board runs it: its code imported in place from the ROMFS image (mapped
# outside the counted heap), at 96K with room to spare (it confirms from 80K up). Loaded from a
# folder instead, the code is in the heap too and a config check needs more than 112K.
HEADSET_HEAP = "96K"

pytestmark = pytest.mark.browser




def login(browser, url: str, username: str, password: str, size=(1440, 900), then="/it"):
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = ctx.new_page()
    page.outside = []  # anything fetched from elsewhere than the companion
    page.on("request", lambda r: page.outside.append(r.url)
            if not r.url.startswith(url) and not r.url.startswith("data:") else None)
    page.goto(url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    page.goto(url + then)
    return page


def overflow(page) -> int:
    """How far the page is wider than the window (0: no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def serious_axe_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    assert len(results.response["passes"]) > 10  # axe really ran over the page
    minor = [v["id"] for v in results.response["violations"]
             if v["impact"] not in ("serious", "critical")]
    if minor:
        print("axe, minor/moderate:", minor)
    return [f"{v['id']} ({v['impact']}): {v['help']} x{len(v['nodes'])}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


def _seed(comp, pub) -> None:
    """Devices in every state the list flags, a dead letter, and a roll-out nothing takes."""
    pub.send(f"calmcue/v1/{SITE}/cc-000000000001/tele",
             {"fw": "1.0.0", "model": "stress-v1", "batt_pct": 6, "rssi": -88, "queue": 42,
              "heap_free": 12_000, "mic_ok": True, "config_rev": 0})
    pub.send(f"calmcue/v1/{SITE}/cc-000000000002/tele",
             {"fw": "1.0.0", "model": "stress-v1", "batt_pct": 81, "rssi": -52, "queue": 0,
              "heap_free": 41_000, "mic_ok": True, "config_rev": 0})
    pub.send("calmcue/v1/store-2/counter-4/tele",
             {"agent": "0.1.0", "model": "stress-v1", "mem_kb": 90_112, "queue": 0})
    pub.send(f"calmcue/v1/{SITE}/cc-000000000001/evt/cue", b"{not json")
    store = comp.app.state.fleet_store
    for dev in ("cc-000000000001", "cc-000000000002"):
        store.record(device=dev, site=SITE, name="counter-" + dev[-1], label="BOX-" + dev[-1],
                     profile="esp32s3-headset", target="esp32", version="1.0.0")
    store.create_update(version="3.0.0", site="store-9", percent=100, files={"main.py": b"x"})
    from companion.store import list_dead_letters

    wait_until(lambda: sum(r["in_registry"] for r in store.inventory()) == 3
               and list_dead_letters(comp.engine), what="the registry and the dead letter")


def test_screens_fit_phone_and_desk_pass_axe_and_offer_only_what_the_role_may(
    tmp_path, mosquitto, browser
):
    with running_companion(sqlite_url(tmp_path), mosquitto.url, env="development") as comp:
        users.create_user(comp.engine, username="ivy", password="ivy-pass-1", role="it")
        users.create_user(comp.engine, username="ada", password="ada-pass-1", role="admin")
        users.create_user(comp.engine, username="ann", password="ann-pass-1", role="manager",
                          sites=[SITE])
        pub = Publisher(mosquitto.port)
        _seed(comp, pub)
        pub.event(cue(site=SITE, device="cc-000000000002", seq=1, cue_name="call_manager",
                      level=3))
        figures = {}
        for who, password in (("ivy", "ivy-pass-1"), ("ada", "ada-pass-1")):
            for vp, size in VIEWPORTS.items():
                page = login(browser, comp.url, who, password, size)
                sizes: dict[str, int] = {}
                page.on("response", lambda r, sizes=sizes: sizes.__setitem__(
                    r.url, len(r.body())) if r.ok and "/api/" not in r.url else None)
                page.reload()
                page.wait_for_selector("#device-table tbody tr")
                weight = sum(sizes.values())
                assert weight < PAGE_BUDGET, sizes
                figures[f"{who}-{vp}-weight"] = weight
                for screen in SCREENS:
                    page.click(f'#tabs a[href="#{screen}"]')
                    page.wait_for_selector(f"#{screen}:not([hidden])")
                    page.wait_for_load_state("networkidle")
                    if screen == "config":
                        page.wait_for_selector("#cfg-table tbody tr")
                    assert overflow(page) <= 0, f"{who} {vp} #{screen} scrolls sideways"
                    bad = serious_axe_violations(page)
                    assert bad == [], f"{who} {vp} #{screen}: {bad}"
                assert page.outside == [], page.outside
                page.context.close()

        # a device last heard from a little over 3 minutes ago
        with comp.engine.begin() as conn:
            conn.execute(update(devices).where(devices.c.device == "counter-4")
                         .values(last_seen=time.time() - 200))
        page = login(browser, comp.url, "ivy", "ivy-pass-1")
        page.wait_for_selector("#device-table tbody tr")
        assert "3 min ago" in page.inner_text('#device-table tr[data-device="counter-4"]')
        row = page.locator('#device-table tr[data-device="cc-000000000001"]')
        for text in ("battery 6 % (<= 15 %)", "signal -88 dBm (<= -80 dBm)",
                     "42 events queued (>= 10)", "free heap 11.7 kB (< 20 kB)", "s ago"):
            assert text in row.inner_text(), text
        assert "11.7 kB free" in row.inner_text()  # memory in one unit, kB
        assert "90112 kB used" in page.inner_text('#device-table tr[data-device="counter-4"]')
        # filter and sort
        page.select_option("#dev-show", "flagged")
        assert page.locator("#device-table tbody tr").count() == 1
        page.select_option("#dev-show", "all")
        page.fill("#dev-filter", "store-2")
        assert page.locator("#device-table tbody tr").count() == 1
        page.fill("#dev-filter", "")
        page.select_option("#dev-sort", "battery_pct")
        order = page.eval_on_selector_all("#device-table tbody tr", "rs => rs.map(r => r.dataset.device)")
        assert order[:2] == ["cc-000000000001", "cc-000000000002"]
        # each row leads to that device's configuration form
        page.click('#device-table tr[data-device="cc-000000000002"] a.configure')
        page.wait_for_selector("#config:not([hidden]) #cfg-table tbody tr")
        assert page.input_value("#cfg-device") == f"{SITE}/cc-000000000002"
        # the roll-out that no device takes is shown, and says so
        page.click('#tabs a[href="#rollouts"]')
        item = page.wait_for_selector('#rollout-list li.rollout:has-text("store-9")')
        assert "No devices" in item.inner_text() and "0 of 0 devices confirmed" in item.inner_text()
        # IT has no users list (admin only) but its own tokens: made (shown once) and revoked
        page.click('#tabs a[href="#people"]')
        page.wait_for_selector("#token-table tbody tr")
        assert page.locator("#users-box").is_hidden()
        page.fill("#token-form input[name=name]", "monitoring")
        page.click("#token-form button")
        page.wait_for_selector("#token-new:has-text('shown once')")
        token = page.inner_text("#token-new").rsplit(" ", 1)[1]
        assert httpx.get(comp.url + "/api/fleet/devices",
                         headers={"Authorization": f"Bearer {token}"}).status_code == 200
        page.click("button[aria-label='Revoke token monitoring of ivy']")
        page.wait_for_selector("#token-table td:text('No API tokens.')")
        assert httpx.get(comp.url + "/api/fleet/devices",
                         headers={"Authorization": f"Bearer {token}"}).status_code == 401
        # on the dashboard, IT sees the alert but is offered no Acknowledge/Resolve it cannot do
        page.goto(comp.url + "/")
        page.wait_for_selector("#alerts li.alert")
        assert page.locator("#alerts button").count() == 0
        assert page.locator("#it-link").is_visible()
        page.context.close()

        # an admin adds a user from the users screen
        adm = login(browser, comp.url, "ada", "ada-pass-1", then="/it#people")
        adm.wait_for_selector("#user-table tbody tr")
        adm.fill("#user-form input[name=username]", "max")
        adm.fill("#user-form input[name=password]", "max-pass-12")
        adm.select_option("#user-form select[name=role]", "manager")
        adm.fill("#user-form input[name=sites]", "store-2")
        adm.click("#user-form button")
        adm.wait_for_selector("#user-table td:text('max')")
        assert users.authenticate(comp.engine, "max", "max-pass-12").sites == {"store-2"}
        adm.context.close()

        mgr = login(browser, comp.url, "ann", "ann-pass-1")
        mgr.wait_for_selector("#refused:not([hidden])")
        assert mgr.locator("#tabs").is_hidden()
        assert httpx.get(comp.url + "/api/fleet/devices", cookies=dict(
            (c["name"], c["value"]) for c in mgr.context.cookies())).status_code == 403
        mgr.goto(comp.url + "/")
        mgr.wait_for_selector("#alerts li.alert button.ack")  # a manager may acknowledge
        assert mgr.locator("#it-link").is_hidden()
        mgr.context.close()
        pub.close()
        print("page weights (bytes):", figures)


def wait_confirmed(page, comp, timeout_ms: int = 30_000) -> None:
    """The form says the device confirmed; else fail with what the page and the companion say."""
    try:
        page.wait_for_selector('#cfg-state[data-state="confirmed"]', timeout=timeout_ms)
    except Exception:
        rec = next(d for d in fleet_view.device_records(
            comp.engine, results=comp.app.state.config_results) if d["device"] == "headset-1")
        raise AssertionError(f"{page.inner_text('#cfg-state')} / record: " + json.dumps(
            {k: rec[k] for k in ("status", "tele", "config", "config_state", "config_detail",
                                 "config_expected_rev", "config_rev")}, default=str)) from None


@pytest.mark.parametrize("vp", ["phone"])
def test_it_changes_a_setting_and_a_real_headset_confirms_it(
    tmp_path, mosquitto, browser, host_build, host_rom, headset_wav, vp
):
    """The headset firmware's own asyncio main loop on the MicroPython unix port, in real time,
    connected to the test's Mosquitto: it gets the retained config, checks and applies it, and
    reports its revision in telemetry; the form shows the device confirmed it."""
    flash = tmp_path / "flash"
    flash.mkdir()
    with running_companion(sqlite_url(tmp_path), mosquitto.url, env="development") as comp:
        users.create_user(comp.engine, username="ivy", password="ivy-pass-1", role="it")
        device = subprocess.Popen(
            runner_cmd(host_build, flash, headset_wav, mosquitto.port, "--asyncio", "120",
                       "--site", SITE, "--device", "headset-1", heap=HEADSET_HEAP, rom=host_rom),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: any(d["device"] == "headset-1" and d["config_rev"] is not None
                                   for d in fleet_view.device_records(comp.engine)),
                       30, "the headset's first telemetry")
            page = login(browser, comp.url, "ivy", "ivy-pass-1", VIEWPORTS[vp],
                         then="/it#config")
            page.wait_for_selector('#cfg-state[data-state="defaults"]')
            assert page.input_value("#cfg-cue_budget") == ""
            assert page.get_attribute("#cfg-cue_budget", "placeholder") == "4"  # the default
            page.fill("#cfg-cue_budget", "99")  # past the table's limit: refused in the page
            page.click("#cfg-save")
            assert "cue_budget: choose a whole number from 0 to 50" in page.inner_text("#cfg-result")
            page.fill("#cfg-cue_budget", "2")
            page.fill("#cfg-brightness", "0.2")
            t0 = time.monotonic()
            page.click("#cfg-save")
            page.wait_for_selector('#cfg-state[data-state="pending"], #cfg-state[data-state="confirmed"]')
            wait_confirmed(page, comp)
            took = time.monotonic() - t0
            assert overflow(page) <= 0
            row = page.locator('#cfg-table tr[data-key="cue_budget"]')
            assert "yes" in row.locator("td.conf-yes").inner_text()
            assert row.locator("td.effective").inner_text() == "2 cues"
            # the device really runs it: its own flash holds the new configuration
            on_flash = json.loads((flash / "config.json").read_text())
            assert on_flash["policy"]["cue_budget"] == 2 and on_flash["brightness"] == 0.2
            rec = next(d for d in fleet_view.device_records(comp.engine)
                       if d["device"] == "headset-1")
            assert rec["config_rev"] == on_flash["rev"] == rec["config_expected_rev"]
            print(f"config confirmed by the device {took:.2f} s after Save ({vp})")
            # the whole site's form: a site value reaches the device, which confirms it too
            page.select_option("#cfg-device", SITE)
            page.wait_for_selector("#cfg-state:has-text('1 of 1 devices confirmed')")
            assert page.input_value("#cfg-cue_budget") == ""  # set on the device, not the site
            page.fill("#cfg-haptic", "0.4")
            page.click("#cfg-save")
            page.wait_for_selector('#cfg-table tr[data-key="haptic"] td.effective:text-is("0.4")')
            wait_confirmed(page, comp)
            assert json.loads((flash / "config.json").read_text())["haptic"] == 0.4
            page.context.close()
        finally:
            device.kill()
            device.wait(5)


def _report(url: str, key: str, device: str, update: str, state: str) -> None:
    """A device's update report as firmware/headset/ota.py sends it: the body and its HMAC."""
    raw = json.dumps({"site": SITE, "device": device, "update": update, "state": state,
                      "detail": ""}).encode()
    mac = ota.hmac_sha256(bytes.fromhex(key), raw).hex()
    r = httpx.post(url + "/fleet/ota/report", content=raw,
                   headers={"X-Calmcue-Device": device, "X-Calmcue-Signature": mac})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("vp", ["phone", "desk"])
def test_rollout_shows_progress_and_rolls_back(tmp_path, mosquitto, browser, vp):
    with running_companion(sqlite_url(tmp_path), mosquitto.url, env="development") as comp:
        users.create_user(comp.engine, username="ivy", password="ivy-pass-1", role="it")
        store: fleet.FleetStore = comp.app.state.fleet_store
        pub = Publisher(mosquitto.port)
        devs = ["cc-00000000000a", "cc-00000000000b"]
        for d in devs:
            store.record(device=d, site=SITE, name="counter-" + d[-1], label="BOX-" + d[-1],
                         profile="esp32s3-headset", target="esp32", version="1.0.0")
            pub.send(f"calmcue/v1/{SITE}/{d}/tele", {"fw": "1.0.0", "config_rev": 0})
        store.create_update(version="1.0.0", site=SITE, percent=100, files={"main.py": b"1"})
        bad = store.create_update(version="2.0.0", site=SITE, percent=100,
                                  files={"main.py": b"2"})["update"]
        keys = {d: store.report_key(d) for d in devs}
        wait_until(lambda: all(r["in_registry"] for r in store.inventory()), what="registry")

        page = login(browser, comp.url, "ivy", "ivy-pass-1", VIEWPORTS[vp], then="/it#rollouts")
        item = f'#rollout-list li[data-update="{bad}"]'
        page.wait_for_selector(f"{item} >> text=0 of 2 devices confirmed")
        _report(comp.url, keys[devs[0]], devs[0], bad, "applied")
        _report(comp.url, keys[devs[0]], devs[0], bad, "confirmed")
        page.wait_for_selector(f"{item} >> text=1 of 2 devices confirmed (50 %)", timeout=10_000)
        assert page.get_attribute(f"{item} progress", "value") == "1"
        _report(comp.url, keys[devs[1]], devs[1], bad, "applied")
        page.wait_for_selector(f"{item} >> text=applied 1 · confirmed 1", timeout=10_000)
        assert overflow(page) <= 0

        page.click(f"{item} button.rollback")
        page.click(f"{item} button.rollback-yes")
        page.wait_for_selector(f"{item}.paused", timeout=10_000)
        back = page.wait_for_selector("#rollout-list li:has-text('rollback to the files of 1.0.0')")
        assert "2.0.0.1" in back.inner_text()
        assert "Rolled back update 2.0.0" in page.inner_text("#status")
        assert overflow(page) <= 0
        # the devices on the bad version are offered the previous files again
        offer = store.check(site=SITE, device=devs[0], version="2.0.0")
        assert offer["version"] == "2.0.0.1"
        assert store.update_summary(bad)["state"] == "paused"
        page.context.close()
        pub.close()


def test_demo_mode_offers_the_device_list_and_config_but_not_the_fleet_api(
    tmp_path, mosquitto, browser
):
    """Demo mode is anonymous and read-only outside the demo: the fleet API (roll-outs) and
    tokens/users are refused there, so the page does not offer them."""
    with running_companion(sqlite_url(tmp_path), mosquitto.url, env="demo") as comp:
        pub = Publisher(mosquitto.port)
        pub.send(f"calmcue/v1/{SITE}/counter-2/tele", {"fw": "0.2.0", "rssi": -61, "queue": 0})
        wait_until(lambda: fleet_view.device_records(comp.engine), what="registry")
        page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
        page.goto(comp.url + "/it")
        page.wait_for_selector('#device-table tr[data-device="counter-2"]')
        assert page.inner_text("#who") == "demo mode"
        assert page.locator('#tabs a[href="#rollouts"]').is_hidden()
        assert page.locator('#tabs a[href="#people"]').is_hidden()
        page.goto(comp.url + "/it#rollouts")  # asked for anyway: the device list instead
        page.wait_for_selector("#devices:not([hidden])")
        assert page.locator("#rollouts").is_hidden()
        assert overflow(page) <= 0 and serious_axe_violations(page) == []
        page.context.close()
        pub.close()
