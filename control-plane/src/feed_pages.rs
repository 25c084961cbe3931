//! Sharing one encoded feed page among the long-polls that ask for it (sans-IO).
//!
//! Members outside the control plane follow the event feed by long-polling the CP member they
//! chose (DESIGN.md §6f). Caught up, they all wait at the same position, so when an event is
//! applied every one of them wakes and asks for the same page: the events after that position
//! at the same applied index. Built per request, a CP member with n followers would copy and
//! encode the same page n times per event and hold n copies while the answers are written.
//! Instead the first request builds and encodes the page, and the others answer with the same
//! bytes.
//!
//! A page is a function of what the reader asks ([`PageKey`]) and of the applied state, and the
//! applied state is a function of the applied index (every member applies the same log in the
//! same order). So a page kept under its applied index is never stale: a request at another
//! index never sees it, and when the index moves on, the pages of the old one are dropped.
//!
//! [`FeedPages`] holds that rule; the caller builds and encodes pages under the state it read
//! (see `ControlPlane::feed_encoded`).

/// What a feed request asks for; with the applied index, it determines the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageKey {
    /// The reader's position: it wants the events after this index.
    pub after: u64,
    /// The epoch the reader follows (`None`: whichever is current).
    pub epoch: Option<u64>,
    /// The most events the page may hold.
    pub limit: usize,
}

/// How many pages one applied index keeps: caught-up readers share one position, and the few
/// catching up after a restart or a partition ask at their own.
pub const MAX_PAGES: usize = 16;

/// The pages built at the newest applied index seen, at most [`MAX_PAGES`] of them.
#[derive(Debug)]
pub struct FeedPages<P> {
    applied_index: u64,
    /// Oldest first; replaced one at a time when full.
    pages: Vec<(PageKey, P)>,
}

impl<P> Default for FeedPages<P> {
    fn default() -> Self {
        Self {
            applied_index: 0,
            pages: Vec::new(),
        }
    }
}

impl<P: Clone> FeedPages<P> {
    /// The page for `key` built at `applied_index`, if one was kept.
    pub fn get(&self, applied_index: u64, key: &PageKey) -> Option<P> {
        if applied_index != self.applied_index {
            return None;
        }
        self.pages
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, page)| page.clone())
    }

    /// Keeps `page`, built for `key` from the state at `applied_index`. A page of a newer index
    /// drops the older ones; a page of an older index (its request read the state before the
    /// last apply) is not kept.
    pub fn insert(&mut self, applied_index: u64, key: PageKey, page: P) {
        if applied_index < self.applied_index {
            return;
        }
        if applied_index > self.applied_index {
            self.applied_index = applied_index;
            self.pages.clear();
        }
        if let Some(slot) = self.pages.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = page;
            return;
        }
        if self.pages.len() >= MAX_PAGES {
            self.pages.remove(0);
        }
        self.pages.push((key, page));
    }

    /// Pages kept now.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(after: u64) -> PageKey {
        PageKey {
            after,
            epoch: Some(1),
            limit: 100,
        }
    }

    #[test]
    fn a_page_is_shared_at_its_index_and_key_only() {
        let mut pages = FeedPages::default();
        pages.insert(10, key(9), "page 9@10");
        assert_eq!(pages.get(10, &key(9)), Some("page 9@10"));
        assert_eq!(pages.get(11, &key(9)), None, "another applied index");
        assert_eq!(pages.get(10, &key(8)), None, "another position");
        let other_epoch = PageKey {
            epoch: None,
            ..key(9)
        };
        assert_eq!(pages.get(10, &other_epoch), None, "another epoch named");
        let other_limit = PageKey { limit: 5, ..key(9) };
        assert_eq!(pages.get(10, &other_limit), None, "another page size");
    }

    #[test]
    fn a_newer_index_drops_the_old_pages_and_an_older_one_is_not_kept() {
        let mut pages = FeedPages::default();
        pages.insert(10, key(9), "page 9@10");
        pages.insert(12, key(10), "page 10@12");
        assert_eq!(pages.len(), 1);
        assert_eq!(pages.get(10, &key(9)), None);
        pages.insert(11, key(10), "page 10@11");
        assert_eq!(pages.get(11, &key(10)), None, "built before the last apply");
        assert_eq!(pages.get(12, &key(10)), Some("page 10@12"));
    }

    #[test]
    fn at_most_max_pages_are_kept_and_the_oldest_goes_first() {
        let mut pages = FeedPages::default();
        for after in 0..(MAX_PAGES as u64 + 3) {
            pages.insert(50, key(after), after);
        }
        assert_eq!(pages.len(), MAX_PAGES);
        assert_eq!(pages.get(50, &key(0)), None);
        assert_eq!(pages.get(50, &key(2)), None);
        assert_eq!(pages.get(50, &key(3)), Some(3));
        assert_eq!(
            pages.get(50, &key(MAX_PAGES as u64 + 2)),
            Some(MAX_PAGES as u64 + 2)
        );
    }

    /// The page a deterministic state at `index` gives for `key`.
    fn truth(index: u64, key: &PageKey) -> (u64, PageKey) {
        (index, *key)
    }

    proptest! {
        /// Whatever the order in which requests at various applied indexes build and look up
        /// pages (slow requests insert late), a lookup answers the page of exactly its index
        /// and key, or nothing; and a lookup right after an insert at the newest index hits.
        #[test]
        fn never_answers_a_page_of_another_index_or_key(
            ops in proptest::collection::vec((any::<bool>(), 0u64..6, 0u64..20, 0usize..3), 1..200)
        ) {
            let mut pages = FeedPages::default();
            let mut newest = 0;
            for (insert, index, after, limit) in ops {
                let k = PageKey { after, epoch: None, limit };
                if insert {
                    pages.insert(index, k, truth(index, &k));
                    newest = newest.max(index);
                    if index == newest {
                        prop_assert_eq!(pages.get(index, &k), Some(truth(index, &k)));
                    }
                } else if let Some(page) = pages.get(index, &k) {
                    prop_assert_eq!(page, truth(index, &k));
                }
                prop_assert!(pages.len() <= MAX_PAGES);
            }
        }
    }
}
