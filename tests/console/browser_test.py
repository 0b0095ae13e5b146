#!/usr/bin/python3
"""The web console in a real browser (docs/console.md), driven by
tests/integration/console_test.cc, which sets up the identity provider, the
broker and the pending approvals, runs this script, and then checks through
the API what each click changed.

Headless Chromium (Debian's chromium + chromium-driver) through Selenium
(python3-selenium): every step is what a person does — follow the sign-in
redirect, type a user name into the provider's form, read the approval,
write a comment, press Approve; press Revoke in the live sessions. It also
checks that the pages work under the console's Content-Security-Policy (the
browser reports a violation in its log) and by keyboard.

usage: browser_test.py PLAN.json
  PLAN: {broker, screenshots, approve, deny, session, grant, other_session}
"""
import json
import os
import sys

from selenium import webdriver
from selenium.common.exceptions import (NoSuchElementException, TimeoutException,
                                        WebDriverException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-sync"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


class Check:
    def __init__(self):
        self.failures = []

    def that(self, ok, what):
        print(("ok: " if ok else "FAIL: ") + what, flush=True)
        if not ok:
            self.failures.append(what)


def wait(driver, condition, seconds=10):
    """Waits for `condition`. While a page is being replaced (a sign-in's
    redirects, the approvals page's reload), the driver may answer with
    transient errors ("aborted by navigation"): those are retried too."""
    try:
        return WebDriverWait(driver, seconds, ignored_exceptions=(WebDriverException,)).until(
            condition)
    except TimeoutException:
        print("timed out on %s; the page:\n%s" % (driver.current_url, driver.page_source[:4000]))
        raise


def submit(driver, action):
    """Runs `action` (a click or a key press that submits a form) and waits
    until the browser has left the current page, so what is looked up next
    is on the answer, not on the page that is being replaced."""
    driver.execute_script("window.jbOldPage = true;")
    action()
    # While the page changes, the driver may answer with transient errors.
    WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return window.jbOldPage === undefined && document.readyState === 'complete';"))


def sign_in(driver, broker, user, page="/ui/approvals"):
    """Opens a console page signed out, follows the redirect to the provider,
    signs in there as `user` and comes back to that page."""
    driver.delete_all_cookies()
    driver.get(broker + page)
    field = wait(driver, EC.presence_of_element_located((By.ID, "login")))
    field.send_keys(user)
    driver.find_element(By.ID, "sign-in").click()
    wait(driver, EC.presence_of_element_located((By.ID, "principal")))
    return driver.find_element(By.ID, "principal").text


def csp_violations(driver):
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e.get("message", "")
            or "Refused to" in e.get("message", "")]


def main():
    plan = json.load(open(sys.argv[1]))
    broker = plan["broker"]
    shots = plan["screenshots"]
    os.makedirs(shots, exist_ok=True)
    check = Check()
    driver = browser()
    try:
        # --- an approver: approve one request, deny another ------------------
        who = sign_in(driver, broker, "maint_2", "/ui/approvals")
        check.that(who == "maint_2", "signed in through the provider as maint_2 (" + who + ")")
        check.that(driver.current_url == broker + "/ui/approvals", "back on the approvals page")
        card = driver.find_element(By.ID, plan["approve"])
        text = card.text
        for expected in ("github.merge_pull_request", "merge", "jwt://api.internal", "maint_1",
                         "agent_test", "task_test", "merge_deploy", "842", "Request digest",
                         "Time left", "Task scope", "Requested scope"):
            check.that(expected in text, "the approval shows " + expected)
        check.that(len(driver.find_elements(By.CSS_SELECTOR, "section.approval")) == 2,
                   "two pending approvals listed")
        # Labels: each comment box is named for assistive technology.
        box = card.find_element(By.TAG_NAME, "textarea")
        label = driver.find_element(By.CSS_SELECTOR, "label[for='%s']" % box.get_attribute("id"))
        check.that(label.text.startswith("Comment"), "the comment box has a label")
        countdown = card.find_element(By.CSS_SELECTOR, ".countdown").text
        check.that(countdown.endswith("s") or countdown == "expired",
                   "the countdown runs (" + countdown + ")")
        driver.save_screenshot(os.path.join(shots, "approvals.png"))
        # Keyboard: type the comment, tab to Approve, press Enter.
        box.click()
        box.send_keys("approved from the browser test")
        box.send_keys(Keys.TAB)
        active = driver.switch_to.active_element
        check.that(active.text == "Approve", "Tab from the comment reaches Approve")
        submit(driver, lambda: active.send_keys(Keys.ENTER))
        notice = wait(driver, EC.presence_of_element_located((By.ID, "notice")))
        check.that("approved" in notice.text, "the page confirms the approval: " + notice.text)
        check.that(len(driver.find_elements(By.ID, plan["approve"])) == 0,
                   "the decided approval left the list")
        card = driver.find_element(By.ID, plan["deny"])
        card.find_element(By.TAG_NAME, "textarea").send_keys("not this one")
        submit(driver, card.find_element(By.CSS_SELECTOR, "button.deny").click)
        notice = wait(driver, EC.presence_of_element_located((By.ID, "notice")))
        check.that("denied" in notice.text, "the page confirms the denial: " + notice.text)
        check.that(driver.find_elements(By.ID, "empty") != [], "nothing is pending any more")
        check.that(csp_violations(driver) == [],
                   "no Content-Security-Policy violation: %s" % csp_violations(driver))

        # --- a principal hands a task to an agent, with a budget ---------------
        sign_in(driver, broker, "eng_1", "/ui/sessions/new")
        driver.find_element(By.ID, "f-agent").send_keys("agent_browser")
        driver.find_element(By.ID, "f-task").send_keys("task_browser")
        driver.find_element(By.ID, "f-description").send_keys("opened from the console")
        driver.find_element(By.ID, "f-resources").send_keys("jwt://mcp.internal")
        driver.find_element(By.ID, "f-max_grants").send_keys("2")
        driver.save_screenshot(os.path.join(shots, "new-session.png"))
        submit(driver, driver.find_element(By.CSS_SELECTOR, "form.newsession button").click)
        session_id = driver.find_element(By.ID, "session-id").text
        token = driver.find_element(By.ID, "session-token").text
        check.that(session_id.startswith("ses_") and token.startswith("jbs_"),
                   "the new session's id and token are shown once")
        with open(plan["new_session_out"], "w") as out:
            json.dump({"session_id": session_id, "session_token": token}, out)
        driver.get(broker + "/ui/sessions/" + session_id)
        check.that("grants 0 of 2" in driver.find_element(By.TAG_NAME, "main").text,
                   "the session shows its budget")
        check.that(token not in driver.page_source, "the token is not shown again")

        # --- another principal: eng_2 sees none of eng_1's sessions ----------
        sign_in(driver, broker, "eng_2", "/ui/sessions")
        body = driver.find_element(By.TAG_NAME, "main").text
        check.that(plan["session"] not in body and plan["other_session"] not in body,
                   "eng_2 does not see eng_1's sessions")
        driver.get(broker + "/ui/sessions/" + plan["other_session"])
        try:
            code = driver.find_element(By.ID, "error-code").text
        except NoSuchElementException:
            code = ""
        check.that(code in ("forbidden", "not_found", "session_not_found"),
                   "eng_2 is refused eng_1's session page (" + code + ")")
        check.that(len(driver.find_elements(By.LINK_TEXT, "Audit")) == 0,
                   "eng_2 is offered no audit page")

        # --- an admin: live sessions, revoke a grant, then the session -------
        sign_in(driver, broker, "admin_1", "/ui/sessions")
        section = driver.find_element(By.ID, plan["session"])
        text = section.text
        for expected in ("eng_1", "agent_test", "task_test", plan["grant"], "active", "internal",
                         "Scope used", "Anomaly signals"):
            check.that(expected in text, "the live session shows " + expected)
        driver.save_screenshot(os.path.join(shots, "sessions.png"))
        row = driver.find_element(By.ID, plan["grant"])
        submit(driver, row.find_element(By.TAG_NAME, "button").click)
        notice = wait(driver, EC.presence_of_element_located((By.ID, "notice")))
        check.that("revoked" in notice.text, "the grant is revoked: " + notice.text)
        outcome = driver.find_element(By.CSS_SELECTOR, "td.outcome").text
        check.that(outcome in ("revoked", "deny_installed", "expiry_only"),
                   "the per-grant outcome is shown (" + outcome + ")")
        driver.get(broker + "/ui/sessions/" + plan["session"])
        form = driver.find_element(By.CSS_SELECTOR, "form.revoke")
        form.find_element(By.NAME, "reason").send_keys("stopped from the console")
        submit(driver, form.find_element(By.TAG_NAME, "button").click)
        notice = wait(driver, EC.presence_of_element_located((By.ID, "notice")))
        check.that("revoked" in notice.text, "the session is revoked: " + notice.text)
        driver.get(broker + "/ui/audit?session=" + plan["session"])
        chain = driver.find_element(By.ID, "chain").text
        check.that("verified" in chain, "the audit page shows the chain verified: " + chain)
        check.that("session.revoked" in driver.find_element(By.TAG_NAME, "main").text,
                   "the audit page lists the revocation")
        driver.save_screenshot(os.path.join(shots, "audit.png"))

        # --- sign out ------------------------------------------------------------
        submit(driver, driver.find_element(By.CSS_SELECTOR, "form.whoami button").click)
        wait(driver, EC.url_contains("/ui/signed-out"))
        driver.get(broker + "/ui/sessions")
        wait(driver, EC.presence_of_element_located((By.ID, "login")))
        check.that("/authorize" in driver.current_url, "signed out: the console asks to sign in")
        check.that(csp_violations(driver) == [],
                   "no Content-Security-Policy violation: %s" % csp_violations(driver))
    finally:
        driver.quit()
    if check.failures:
        print("%d check(s) failed" % len(check.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
