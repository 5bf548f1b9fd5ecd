// What the demo pages share: the SDK client for this server, and small UI
// pieces (player, countdown, MVPD picker). Only the SDK talks to temppass.
//
// On your own site you would not fetch demo-config.json: you would put the
// software statement of `temppass app create` in your page (see docs/web-sdk.md).

import { createClient, regularMvpds } from "./temppass.js";

/** The message of the seeds' sample code, word for word. */
export const EXPIRED_MESSAGE = "Your Temp Pass has expired, please log in with your cable provider";

/** The element with `data-testid="<id>"`. */
export function $(id) {
  const element = document.querySelector(`[data-testid="${id}"]`);
  if (!element) throw new Error(`no element with data-testid="${id}"`);
  return element;
}

export function show(id, visible = true) {
  $(id).hidden = !visible;
}

/** A client of this server's API, with the demo application's software statement. */
export async function demoClient() {
  const response = await fetch("demo-config.json", { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`demo-config.json: HTTP ${response.status}`);
  const { softwareStatement, serviceProvider } = await response.json();
  return createClient({ baseUrl: location.origin, serviceProvider, softwareStatement });
}

/** Sets the page's status line: `data-testid="status"` holds a word the tests read. */
export function setStatus(word, text = word) {
  const status = $("status");
  status.dataset.state = word;
  status.textContent = text;
}

/** Shows an error the page cannot handle (an enhanced error's code and message, or any error). */
export function showError(error) {
  const box = $("error");
  box.hidden = false;
  box.textContent = error && error.code ? `${error.code}: ${error.message}` : String(error);
  setStatus("error");
}

let countdownTimer;

/**
 * Counts down to the end of the trial. `permit.notAfter - permit.notBefore`
 * is measured on the server's clock; the browser only counts it down.
 */
export function startCountdown(permit) {
  stopCountdown();
  const endsAt = performance.now() + (permit.notAfter - permit.notBefore);
  const render = () => {
    const leftMs = Math.max(0, endsAt - performance.now());
    const seconds = Math.ceil(leftMs / 1000);
    const two = (n) => String(n).padStart(2, "0");
    const hours = Math.floor(seconds / 3600);
    const minutes = Math.floor((seconds % 3600) / 60);
    const text = hours > 0 ? `${hours}:${two(minutes)}:${two(seconds % 60)}` : `${minutes}:${two(seconds % 60)}`;
    $("countdown").textContent = text;
    $("countdown").dataset.secondsLeft = String(seconds);
  };
  render();
  countdownTimer = setInterval(render, 250);
}

export function stopCountdown() {
  clearInterval(countdownTimer);
}

/** "Plays" a resource: a real page would hand `permit.token.serializedToken` to its player and back end. */
export function play(permit, label = permit.resource) {
  show("player");
  $("now-playing").textContent = label;
  $("media-token").textContent = permit.token ? permit.token.serializedToken : "";
  setStatus("playing", "playing");
}

export function stopPlaying() {
  stopCountdown();
  show("player", false);
}

/**
 * The MVPD picker without TempPass MVPDs. Signing in with a real MVPD is
 * Adobe Pass authentication, outside temppass; the demo only says so.
 */
export function renderPicker(config) {
  const list = $("mvpd-list");
  list.replaceChildren(
    ...regularMvpds(config).map((mvpd) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "mvpd";
      button.dataset.testid = `mvpd-${mvpd.id}`;
      button.textContent = mvpd.displayName || mvpd.id;
      button.addEventListener("click", () => {
        $("picker-note").textContent = `Signing in with ${button.textContent} is your MVPD's login (Adobe Pass authentication): not part of this demo.`;
      });
      const item = document.createElement("li");
      item.append(button);
      return item;
    }),
  );
  show("picker");
}

/** The expiry message and the picker: what the viewer sees when no temporary access is left. */
export function showExpired(config) {
  stopPlaying();
  $("expired-message").textContent = EXPIRED_MESSAGE;
  show("expired-message");
  renderPicker(config);
  setStatus("expired", "expired");
}
