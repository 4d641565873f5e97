//! Who may write which topic: the table `SECURITY.md` documents, in code.

/// The identity behind a key: which part of Vigil (or of the platform) holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `vigil run`.
    Worker,
    /// `vigil console`.
    Console,
    /// `vigil actuate`.
    Actuator,
    /// The platform's producer of stream lifecycle events.
    Lifecycle,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Worker, Role::Console, Role::Actuator, Role::Lifecycle];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Console => "console",
            Role::Actuator => "actuator",
            Role::Lifecycle => "lifecycle",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The topics Vigil parts read or write, by what they carry (their names are config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Alerts,
    Interrupts,
    /// Action outcomes and stream events.
    Actions,
    /// Fleet claims, hand-offs, releases and offers between workers.
    Owners,
    BankUpdates,
    Lifecycle,
    DeadLetter,
}

impl TopicKind {
    pub const ALL: [TopicKind; 7] = [
        TopicKind::Alerts,
        TopicKind::Interrupts,
        TopicKind::Actions,
        TopicKind::Owners,
        TopicKind::BankUpdates,
        TopicKind::Lifecycle,
        TopicKind::DeadLetter,
    ];

    /// A fixed word: the `topic` label of the trust metrics.
    pub fn label(self) -> &'static str {
        match self {
            TopicKind::Alerts => "alerts",
            TopicKind::Interrupts => "interrupts",
            TopicKind::Actions => "actions",
            TopicKind::Owners => "owners",
            TopicKind::BankUpdates => "bank_updates",
            TopicKind::Lifecycle => "lifecycle",
            TopicKind::DeadLetter => "dead_letter",
        }
    }

    /// The roles whose records readers of this topic act on.
    pub fn writers(self) -> &'static [Role] {
        match self {
            TopicKind::Alerts => &[Role::Worker],
            TopicKind::Interrupts => &[Role::Worker, Role::Console],
            TopicKind::Actions => &[Role::Worker, Role::Actuator],
            TopicKind::Owners => &[Role::Worker],
            TopicKind::BankUpdates => &[Role::Console],
            TopicKind::Lifecycle => &[Role::Lifecycle],
            TopicKind::DeadLetter => &[Role::Actuator],
        }
    }

    /// Command topics: a record acts once, now. Only they have a freshness window: a
    /// record signed longer ago than the window (or ahead of the clock) is refused.
    /// The others are state and history (an allowlist read from the start, alerts held
    /// in a spool for hours) and are checked for repeats only.
    pub fn is_command(self) -> bool {
        matches!(self, TopicKind::Interrupts | TopicKind::Lifecycle | TopicKind::Owners)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_has_writers_and_roles_read_back() {
        for t in TopicKind::ALL {
            assert!(!t.writers().is_empty(), "{t:?}");
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
        // Nobody but the console writes allowlist entries, nobody but workers alerts.
        assert_eq!(TopicKind::BankUpdates.writers(), &[Role::Console]);
        assert_eq!(TopicKind::Alerts.writers(), &[Role::Worker]);
        assert!(!TopicKind::Actions.writers().contains(&Role::Console), "a cut is reported by who made it");
    }
}
