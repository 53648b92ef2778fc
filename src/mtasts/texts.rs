//! [`PolicyTexts`]: the policy text of every HTTPS host, as the listener serves them.

/// The policy text of each HTTPS host (`mta-sts.<domain>`, lowercase), every host and text in
/// one buffer, sorted by host. A map of a `String` host to an `Arc<str>` text took about 230
/// bytes per domain (three allocations and the map's free slots); this takes the bytes of host
/// and text and 8 more. Built whole by the daemon at each load; read by every request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PolicyTexts {
    /// Host, then its text, for each entry in host order.
    buf: Box<str>,
    /// For each entry: where its host ends and where its text ends in `buf` (its host starts
    /// where the previous text ends).
    ends: Box<[(u32, u32)]>,
}

impl PolicyTexts {
    fn entry(&self, i: usize) -> (&str, &str) {
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1].1 as usize,
        };
        let (host_end, text_end) = self.ends[i];
        (
            &self.buf[start..host_end as usize],
            &self.buf[host_end as usize..text_end as usize],
        )
    }

    /// The text served for `host` (lowercase, no trailing dot).
    pub(crate) fn get(&self, host: &str) -> Option<&str> {
        let (mut lo, mut hi) = (0, self.ends.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (h, text) = self.entry(mid);
            match h.cmp(host) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(text),
            }
        }
        None
    }

    /// Every host with its text, in host order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.ends.len()).map(|i| self.entry(i))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
}

/// The hosts and texts of a [`PolicyTexts`] take 4 GiB or more.
#[derive(Debug, thiserror::Error)]
#[error("the policy texts and their hosts take {0} bytes; at most 4 GiB can be served")]
pub(crate) struct TooLarge(usize);

impl PolicyTexts {
    /// The texts of `entries` (host, text); of a host listed twice, the last text is kept.
    pub(crate) fn new<H: AsRef<str>, T: AsRef<str>>(
        entries: impl IntoIterator<Item = (H, T)>,
    ) -> Result<PolicyTexts, TooLarge> {
        let mut entries: Vec<(H, T)> = entries.into_iter().collect();
        // Stable: of equal hosts the last stays last; the dedup moves it into the kept slot.
        entries.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        entries.dedup_by(|later, kept| {
            let same = later.0.as_ref() == kept.0.as_ref();
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        let total: usize = entries
            .iter()
            .map(|(h, t)| h.as_ref().len() + t.as_ref().len())
            .sum();
        if u32::try_from(total).is_err() {
            return Err(TooLarge(total));
        }
        let mut buf = String::with_capacity(total);
        let mut ends = Vec::with_capacity(entries.len());
        for (h, t) in &entries {
            buf.push_str(h.as_ref());
            let host_end = buf.len() as u32; // total fits in u32 (checked above)
            buf.push_str(t.as_ref());
            ends.push((host_end, buf.len() as u32));
        }
        Ok(PolicyTexts {
            buf: buf.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_host_and_only_those() {
        let t = PolicyTexts::new([
            ("mta-sts.b.test", "version: STSv1\nmode: testing\n"),
            ("mta-sts.a.test", "version: STSv1\nmode: enforce\n"),
            ("mta-sts.c.test", ""),
        ])
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.get("mta-sts.a.test"),
            Some("version: STSv1\nmode: enforce\n")
        );
        assert_eq!(
            t.get("mta-sts.b.test"),
            Some("version: STSv1\nmode: testing\n")
        );
        assert_eq!(t.get("mta-sts.c.test"), Some(""));
        for absent in [
            "",
            "mta-sts.a.tes",
            "mta-sts.a.testx",
            "mta-sts.d.test",
            "a",
        ] {
            assert_eq!(t.get(absent), None, "{absent}");
        }
        let hosts: Vec<&str> = t.iter().map(|(h, _)| h).collect();
        assert_eq!(
            hosts,
            ["mta-sts.a.test", "mta-sts.b.test", "mta-sts.c.test"]
        );
        assert_eq!(PolicyTexts::default().get("mta-sts.a.test"), None);
    }

    #[test]
    fn a_host_listed_twice_keeps_its_last_text() {
        let t = PolicyTexts::new([("h", "one"), ("g", "x"), ("h", "two")]).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("h"), Some("two"));
        assert_eq!(t.get("g"), Some("x"));
    }
}
