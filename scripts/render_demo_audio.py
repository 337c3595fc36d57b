"""Render the bundled demo conversation (calm -> agitated -> calm) with espeak-ng.

Run once by hand when the script changes (needs Debian's espeak-ng):

    .venv/bin/python scripts/render_demo_audio.py

It writes calmcue/data/demo_conversation.wav (16 kHz mono int16), the staff member's shift-start
enrolment calmcue/data/demo_staff_enrolment.wav, and a timeline of the turns,
calmcue/data/demo_conversation.json, which the end-to-end tests use to measure how long after
the customer's voice turns stressed the first cue arrives. The audio is the project's own:
synthetic speech, no recordings.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

OUT = Path(__file__).resolve().parent.parent / "calmcue" / "data"
SR = 16000

# espeak-ng voices: the staff member and the customer sound different (pitch, voice variant).
VOICES = {"staff": "en-gb+m3", "customer": "en-us+f2"}

# prosody per style, as SSML: agitated speech is faster, higher, wider in pitch and louder.
STYLES = {
    "calm": dict(rate="90%", pitch="-5%", range="low", volume="medium"),
    "tense": dict(rate="120%", pitch="+25%", range="x-high", volume="loud"),
    "agitated": dict(rate="140%", pitch="+45%", range="x-high", volume="x-loud"),
    "hurried": dict(rate="150%", pitch="+15%", range="high", volume="loud"),
}

TURNS = [
    # (speaker, style, pause before in s, text)
    ("staff", "calm", 1.5, "Good morning. How can I help you today?"),
    ("customer", "calm", 0.6, "Hi. I bought this kettle last week, and I would like to return it."),
    ("staff", "calm", 0.7, "Of course. Do you have the receipt with you?"),
    ("customer", "calm", 0.6, "Yes, here it is. It stopped working after two days."),
    ("staff", "calm", 0.8, "I am sorry about that. Let me check the system for you."),
    ("customer", "tense", 1.2, "Two days! I waited forty minutes in that queue for this!"),
    ("staff", "calm", 0.5, "I understand. Let me see what I can do."),
    ("customer", "agitated", 0.3,
     "No, you do not understand! This is the third time this has happened! "
     "I want my money back, right now!"),
    ("customer", "agitated", 0.4, "This is absolutely ridiculous! Nobody here ever listens!"),
    ("staff", "hurried", 0.3, "Sir, I am trying to help you, please just let me finish what I am saying!"),
    ("customer", "agitated", 0.2, "Then help me! Get me your manager! Now!"),
    ("staff", "calm", 1.5, "I hear you, and I am sorry. I will refund the full amount right now."),
    ("customer", "calm", 1.5, "Okay. Thank you. Sorry for shouting."),
    ("staff", "calm", 0.8, "No problem at all. Here is your receipt."),
    ("customer", "calm", 0.7, "Thanks. Have a good day."),
    ("staff", "calm", 0.6, "You too. Goodbye."),
]
TAIL_SILENCE_S = 4.0
# Shift start at a counter: the staff member speaks alone for a few seconds so the device learns
# their voice (counter-mode enrolment). The demo device enrols from this before the conversation.
ENROLMENT = (
    "Good morning. This is the start of my shift at counter one. "
    "Today I will be helping customers with returns, refunds and questions about orders."
)


def speak(text: str, speaker: str, style: str) -> np.ndarray:
    p = STYLES[style]
    ssml = (
        f'<speak><prosody rate="{p["rate"]}" pitch="{p["pitch"]}" range="{p["range"]}" '
        f'volume="{p["volume"]}">{text}</prosody></speak>'
    )
    wav = subprocess.run(
        ["espeak-ng", "-m", "-v", VOICES[speaker], "--stdout", ssml],
        check=True, capture_output=True,
    ).stdout
    audio, sr = sf.read(io.BytesIO(wav), dtype="float64")
    return np.asarray(resample_poly(audio, SR, sr), dtype=np.float64)


def main() -> int:
    rng = np.random.default_rng(20261124)
    pieces: list[np.ndarray] = []
    timeline = []
    t = 0.0
    for speaker, style, pause, text in TURNS:
        pieces.append(np.zeros(int(pause * SR)))
        t += pause
        speech = speak(text, speaker, style)
        if speaker == "staff":
            speech *= 0.8  # the staff voice is a little further from the counter microphone
        pieces.append(speech)
        timeline.append({"speaker": speaker, "style": style, "start": round(t, 3),
                         "end": round(t + len(speech) / SR, 3), "text": text})
        t += len(speech) / SR
    pieces.append(np.zeros(int(TAIL_SILENCE_S * SR)))
    audio = np.concatenate(pieces)
    audio += rng.normal(0.0, 10 ** (-62 / 20), audio.size)  # quiet room noise, not digital silence
    peak = np.max(np.abs(audio))
    audio *= 0.7 / peak
    OUT.mkdir(parents=True, exist_ok=True)
    sf.write(OUT / "demo_conversation.wav", audio, SR, subtype="PCM_16")
    (OUT / "demo_conversation.json").write_text(json.dumps(
        {"sample_rate": SR, "duration_s": round(audio.size / SR, 3), "turns": timeline}, indent=1))
    print(f"wrote {OUT / 'demo_conversation.wav'}: {audio.size / SR:.1f} s")
    enrol = np.concatenate([np.zeros(SR // 2), 0.8 * speak(ENROLMENT, "staff", "calm"), np.zeros(SR // 2)])
    enrol += rng.normal(0.0, 10 ** (-62 / 20), enrol.size)
    sf.write(OUT / "demo_staff_enrolment.wav", enrol * 0.7 / peak, SR, subtype="PCM_16")
    print(f"wrote {OUT / 'demo_staff_enrolment.wav'}: {enrol.size / SR:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
