//! One stream's fusion state: its recent samples, its open incident, and the sampling
//! density it should get. Deterministic: the same signal sequence gives the same
//! decisions and the same alert ids.

use crate::policy::{Conditions, Decision, Policy};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use vigil_core::alert::{ALERT_SCHEMA, SCHEMA_VERSION};
use vigil_core::{Alert, AlertContext, AlertEvent, EvidenceFrame, Explanation, FrameSignals, StreamId, Verdict};

/// Frames kept as evidence in an incident (the first ones and the latest ones).
const MAX_EVIDENCE_FRAMES: usize = 16;

/// What media should do for this stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Calm: the cheap baseline (keyframes).
    Cheap,
    /// Risk is rising or an incident is open: sample densely.
    Dense,
}

/// An incident: one per continuous episode of risk on a stream; its id is the alert id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `STREAM@SESSION#N`: the Nth incident of this session of the stream. A publisher
    /// who reconnects gets a new session, so showing the same material from pts 0 again
    /// opens a new incident with a new id (and a new command id) instead of one that
    /// consumers would drop as a duplicate.
    pub id: String,
    pub stream: StreamId,
    pub decision: Decision,
    pub rule: String,
    pub started_ms: u64,
    pub last_seen_ms: u64,
    pub reasons: Vec<String>,
    pub frames: Vec<EvidenceFrame>,
    pub policy: String,
    pub policy_version: String,
    /// Stream time its interrupt was last issued (none: not an interrupt yet).
    #[serde(default)]
    pub interrupt_issued_ms: Option<u64>,
    /// Times its interrupt was issued again.
    #[serde(default)]
    pub reissues: u32,
}

impl Incident {
    /// The alert message for `event` of this incident.
    pub fn to_alert(&self, event: AlertEvent, ctx: &AlertContext, now_unix_ms: u64) -> Alert {
        Alert {
            schema: ALERT_SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            alert_id: self.id.clone(),
            event,
            stream_id: self.stream.clone(),
            account_id: ctx.account_id.clone(),
            session_id: ctx.session_id.clone(),
            started_ms: self.started_ms,
            last_seen_ms: self.last_seen_ms,
            emitted_at_unix_ms: now_unix_ms,
            decision: self.decision.verdict(),
            rule: self.rule.clone(),
            explanation: Explanation {
                reasons: self.reasons.clone(),
                frames: self.frames.clone(),
                models: ctx.models.clone(),
                policy: self.policy.clone(),
                policy_version: self.policy_version.clone(),
            },
            worker_id: ctx.worker_id.clone(),
            reissue: (event == AlertEvent::Reissued).then_some(self.reissues),
            origin: ctx.origin,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A new incident: alert.
    Opened(Incident),
    /// The same incident, now with a stronger decision (review → interrupt).
    Escalated(Incident),
    /// Still an interrupt `reissue_secs` after its command: the command again, new id.
    Reissued(Incident),
    /// The stream has been calm long enough: the incident is over.
    Closed(Incident),
}

impl Event {
    pub fn to_alert(&self, ctx: &AlertContext, now_unix_ms: u64) -> Alert {
        match self {
            Event::Opened(i) => i.to_alert(AlertEvent::Opened, ctx, now_unix_ms),
            Event::Escalated(i) => i.to_alert(AlertEvent::Escalated, ctx, now_unix_ms),
            Event::Reissued(i) => i.to_alert(AlertEvent::Reissued, ctx, now_unix_ms),
            Event::Closed(i) => i.to_alert(AlertEvent::Closed, ctx, now_unix_ms),
        }
    }
}

/// What one sample did to the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The stream's decision as of this sample.
    pub verdict: Verdict,
    /// The rule behind `verdict`, when one fired.
    pub rule: Option<String>,
    pub conditions: Conditions,
    pub events: Vec<Event>,
    pub sampling: Sampling,
}

struct Sample {
    conditions: Conditions,
    /// Rules a reviewed false positive silences on this sample (bit i = rule i).
    allowed: u64,
}

pub struct StreamFusion {
    policy: Arc<Policy>,
    stream: StreamId,
    session: String,
    /// Incidents opened in this session so far.
    incidents_opened: u64,
    window: VecDeque<Sample>,
    /// Per rule: its decayed score (rules with a `decay` window only).
    scores: Vec<f64>,
    last_pts_ms: Option<u64>,
    incident: Option<Incident>,
    clear_streak: usize,
}

impl StreamFusion {
    /// `session` names this run of the stream (a publish, a pull, a scan); incident ids
    /// are unique per session and incident.
    pub fn new(policy: Arc<Policy>, stream: StreamId, session: String) -> Self {
        let cap = policy.window();
        let scores = vec![0.0; policy.rule.len()];
        StreamFusion {
            policy,
            stream,
            session,
            incidents_opened: 0,
            window: VecDeque::with_capacity(cap),
            scores,
            last_pts_ms: None,
            incident: None,
            clear_streak: 0,
        }
    }

    pub fn open_incident(&self) -> Option<&Incident> {
        self.incident.as_ref()
    }

    /// The stream's source came back (a reconnect, a decoder restart): a new session,
    /// whose incidents get new ids, so what is seen next is alerted (and cut) anew. The
    /// evidence gathered so far (the window, the decayed scores) is kept, so a restart
    /// provoked by the publisher does not wash out a rule that was building up. Returns
    /// the old session's open incident, closed.
    pub fn renew_session(&mut self, session: String) -> Option<Event> {
        self.session = session;
        self.incidents_opened = 0;
        self.clear_streak = 0;
        // Stream time starts over with the new connection.
        self.last_pts_ms = None;
        self.incident.take().map(Event::Closed)
    }

    /// Takes over the incident the stream's previous owner still had open when it let
    /// the stream go (a fleet hand-off), given the events this fusion held back while
    /// both owners analysed the stream; returns the events still to send.
    ///
    /// With no previous incident, the held events go out as they are. With one, the
    /// overlap was one episode already alerted under the previous owner's id: this
    /// fusion's own open incident continues under that id (escalated only when it
    /// decided more than the previous owner had), and an incident it opened and closed
    /// within the overlap is dropped. With nothing open here, the previous incident stays
    /// open on this fusion, so what follows escalates or closes it instead of alerting
    /// anew. Stream times of an adopted incident up to the hand-off are the previous
    /// owner's.
    pub fn adopt(&mut self, prior: Option<Incident>, held: Vec<Event>) -> Vec<Event> {
        let Some(prior) = prior.filter(|p| p.stream == self.stream) else { return held };
        // The strongest decision this fusion reached in the overlap, even in an incident
        // it opened and closed there: the adopted incident must have been alerted at it.
        let held_top = held
            .iter()
            .map(|e| match e {
                Event::Opened(i) | Event::Escalated(i) | Event::Reissued(i) | Event::Closed(i) => {
                    (i.decision, i.rule.clone())
                }
            })
            .max_by_key(|(d, _)| *d);
        match self.incident.take() {
            Some(mut own) => {
                let top = std::iter::once((own.decision, own.rule.clone()))
                    .chain(held_top)
                    .max_by_key(|(d, _)| *d)
                    .unwrap_or((own.decision, own.rule.clone()));
                let escalates = top.0 > prior.decision;
                own.id = prior.id;
                own.started_ms = prior.started_ms;
                (own.decision, own.rule) = if escalates { top } else { (prior.decision, prior.rule) };
                let mut frames = prior.frames;
                for f in own.frames.drain(..) {
                    if frames.len() >= MAX_EVIDENCE_FRAMES {
                        frames.remove(MAX_EVIDENCE_FRAMES / 2);
                    }
                    frames.push(f);
                }
                own.frames = frames;
                for r in prior.reasons.into_iter().rev() {
                    if !own.reasons.contains(&r) && own.reasons.len() < 32 {
                        own.reasons.insert(0, r);
                    }
                }
                let events = if escalates { vec![Event::Escalated(own.clone())] } else { Vec::new() };
                self.incident = Some(own);
                events
            }
            None => {
                let mut prior = prior;
                // Calm is measured from here, in this owner's stream time; so is the time
                // to a reissue of an interrupt issued before the hand-off.
                prior.last_seen_ms = self.last_pts_ms.unwrap_or(0);
                prior.interrupt_issued_ms = prior.interrupt_issued_ms.map(|_| prior.last_seen_ms);
                self.clear_streak = 0;
                let mut events = Vec::new();
                if let Some((decision, rule)) = held_top.filter(|(d, _)| *d > prior.decision) {
                    (prior.decision, prior.rule) = (decision, rule);
                    events.push(Event::Escalated(prior.clone()));
                }
                self.incident = Some(prior);
                events
            }
        }
    }

    pub fn observe(&mut self, s: &FrameSignals) -> Outcome {
        let (conditions, reasons) = self.policy.conditions(s);
        if self.window.len() == self.policy.window() {
            self.window.pop_front();
        }
        let allowed = self.policy.allowed_mask(s);
        self.window.push_back(Sample { conditions, allowed });
        // Stream time since the last sample; none when time went backwards (a reconnect).
        let elapsed_secs = self.last_pts_ms.map_or(0.0, |t| s.pts_ms.saturating_sub(t) as f64 / 1000.0);
        self.last_pts_ms = Some(s.pts_ms);
        let counts =
            |x: &Sample, i: usize, r: &crate::policy::Rule| x.conditions.has(r.condition) && x.allowed & (1 << i) == 0;
        let this = Sample { conditions, allowed };
        for (i, (score, rule)) in self.scores.iter_mut().zip(&self.policy.rule).enumerate() {
            if let Some(d) = rule.decay {
                *score = *score * 0.5f64.powf(elapsed_secs / d.half_life_secs)
                    + if counts(&this, i, rule) { 1.0 } else { 0.0 };
            }
        }
        let window = &self.window;
        let fired = self.policy.rule.iter().zip(&self.scores).enumerate().find_map(|(i, (r, &score))| {
            let hit = match r.decay {
                Some(d) => score >= d.threshold,
                None => window.iter().rev().take(r.n).filter(|x| counts(x, i, r)).count() >= r.k,
            };
            hit.then_some(r)
        });
        let mut events = Vec::new();
        let evidence = EvidenceFrame {
            pts_ms: s.pts_ms,
            pdq: s.pdq.as_ref().map(|p| p.hash.clone()),
            conditions: conditions.names().into_iter().map(str::to_string).collect(),
        };
        self.clear_streak = if conditions.is_empty() { self.clear_streak + 1 } else { 0 };
        match (fired, self.incident.as_mut()) {
            (Some(rule), None) => {
                self.incidents_opened += 1;
                let incident = Incident {
                    id: format!("{}@{}#{}", self.stream, self.session, self.incidents_opened),
                    stream: self.stream.clone(),
                    decision: rule.decision,
                    rule: rule.name.clone(),
                    started_ms: s.pts_ms,
                    last_seen_ms: s.pts_ms,
                    reasons: reasons.clone(),
                    frames: vec![evidence],
                    policy: self.policy.policy.name.clone(),
                    policy_version: self.policy.policy.version.clone(),
                    interrupt_issued_ms: (rule.decision == Decision::Interrupt).then_some(s.pts_ms),
                    reissues: 0,
                };
                events.push(Event::Opened(incident.clone()));
                self.incident = Some(incident);
            }
            (Some(rule), Some(inc)) => {
                if !conditions.is_empty() {
                    inc.last_seen_ms = s.pts_ms;
                    add_evidence(inc, evidence, &reasons);
                }
                if rule.decision > inc.decision {
                    inc.decision = rule.decision;
                    inc.rule = rule.name.clone();
                    if rule.decision == Decision::Interrupt {
                        inc.interrupt_issued_ms = Some(s.pts_ms);
                    }
                    events.push(Event::Escalated(inc.clone()));
                } else if rule.decision == Decision::Interrupt && inc.decision == Decision::Interrupt {
                    // Still meeting an interrupt rule long after the command: it did not
                    // reach the stream (an actuator down, a reconnect it missed).
                    let every_ms = self.policy.incident.reissue_secs.saturating_mul(1000);
                    let issued = *inc.interrupt_issued_ms.get_or_insert(s.pts_ms);
                    if every_ms > 0 && s.pts_ms.saturating_sub(issued) >= every_ms {
                        inc.reissues += 1;
                        inc.interrupt_issued_ms = Some(s.pts_ms);
                        events.push(Event::Reissued(inc.clone()));
                    }
                }
            }
            (None, Some(inc)) => {
                if !conditions.is_empty() {
                    inc.last_seen_ms = s.pts_ms;
                    add_evidence(inc, evidence, &reasons);
                }
                let calm_for_ms = s.pts_ms.saturating_sub(inc.last_seen_ms);
                if self.clear_streak >= self.policy.incident.clear_samples
                    && calm_for_ms >= self.policy.incident.cooldown_secs * 1000
                {
                    events.push(Event::Closed(inc.clone()));
                    self.incident = None;
                }
            }
            (None, None) => {}
        }
        let verdict = match (fired, conditions.has(crate::policy::Condition::Unscanned)) {
            (Some(r), _) => r.decision.verdict(),
            (None, true) => Verdict::Unscanned,
            (None, false) => Verdict::Clear,
        };
        let risky = self.incident.is_some() || self.window.iter().any(|x| !x.conditions.is_empty());
        Outcome {
            verdict,
            rule: fired.map(|r| r.name.clone()),
            conditions,
            events,
            sampling: if risky { Sampling::Dense } else { Sampling::Cheap },
        }
    }
}

fn add_evidence(inc: &mut Incident, frame: EvidenceFrame, reasons: &[String]) {
    if inc.frames.len() >= MAX_EVIDENCE_FRAMES {
        // Keep the first half (how it started) and a sliding latest half.
        inc.frames.remove(MAX_EVIDENCE_FRAMES / 2);
    }
    inc.frames.push(frame);
    for r in reasons {
        if !inc.reasons.contains(r) && inc.reasons.len() < 32 {
            inc.reasons.push(r.clone());
        }
    }
}
