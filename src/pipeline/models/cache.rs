//! The built networks, keyed by what they are made of: a file, its LoRAs and the network's role
//! in it. Entries that every image of the loaded models needs (text encoders, VAE) are pinned;
//! the others (the UNets) are swappable, and the residency from `--vram` says how many of them
//! stay: all (`high`), or no more than the largest one's parameters (`normal`, `low`: one UNet at
//! a time, the base's dropped before the refiner's is built and built again for the next image).
//! The least recently used swappable entry is evicted first, before the new one is built, so that
//! two never coexist. Networks are handed out as `Rc`s, so a caller holds one only while it uses
//! it.

use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

/// Which network of a file an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    ClipL,
    ClipG,
    Unet,
    Vae,
}

/// What a built network is made of: a file, the LoRAs merged into it (strengths as bit patterns,
/// so that keys compare exactly) and its role in the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetKey {
    pub file: PathBuf,
    pub loras: Vec<(PathBuf, u64)>,
    pub role: Role,
}

/// How many swappable networks stay built, from `--vram`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    /// Every network stays (`--vram high`).
    All,
    /// Swappable networks stay while their parameters add up to no more than the largest of
    /// them: one UNet at a time.
    Largest,
}

struct Entry {
    key: NetKey,
    /// Parameters, what the residency budget counts.
    cost: u64,
    pinned: bool,
    last_used: u64,
    value: Rc<dyn Any>,
}

/// The cache of built networks.
pub struct NetCache {
    entries: Vec<Entry>,
    residency: Residency,
    clock: u64,
    builds: HashMap<NetKey, usize>,
}

impl NetCache {
    pub fn new(residency: Residency) -> Self {
        Self {
            entries: Vec::new(),
            residency,
            clock: 0,
            builds: HashMap::new(),
        }
    }

    /// The network under `key`, built by `build` first if it is not resident (after evicting
    /// what the residency asks). `cost` is its parameter count; `pinned` keeps it until
    /// [`NetCache::retain`] drops it.
    pub fn get_or_build<T: 'static, E>(
        &mut self,
        key: &NetKey,
        cost: u64,
        pinned: bool,
        build: impl FnOnce() -> Result<T, E>,
    ) -> Result<Rc<T>, E> {
        self.clock += 1;
        if let Some(entry) = self.entries.iter_mut().find(|e| &e.key == key) {
            entry.last_used = self.clock;
            if let Ok(value) = entry.value.clone().downcast::<T>() {
                return Ok(value);
            }
        }
        self.entries.retain(|e| &e.key != key);
        if !pinned {
            self.make_room(cost);
        }
        let value = Rc::new(build()?);
        *self.builds.entry(key.clone()).or_default() += 1;
        self.entries.push(Entry {
            key: key.clone(),
            cost,
            pinned,
            last_used: self.clock,
            value: value.clone(),
        });
        Ok(value)
    }

    /// Evicts the least recently used swappable entries until one of `cost` fits: the swappable
    /// ones then add up to no more than the largest of them (the new one included).
    fn make_room(&mut self, cost: u64) {
        if self.residency == Residency::All {
            return;
        }
        let mut evicted = false;
        loop {
            let swappable = self.entries.iter().filter(|e| !e.pinned);
            let (total, largest) = swappable.fold((cost, cost), |(total, largest), e| {
                (total + e.cost, largest.max(e.cost))
            });
            if total <= largest {
                break;
            }
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.pinned)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.entries.remove(oldest);
            evicted = true;
        }
        if evicted {
            // What the evicted network freed would stay in the allocator's heap.
            crate::kernels::memory::release_freed();
        }
    }

    /// Drops every entry whose key `keep` refuses.
    pub fn retain(&mut self, keep: impl Fn(&NetKey) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|e| keep(&e.key));
        if self.entries.len() != before {
            crate::kernels::memory::release_freed();
        }
    }

    /// How many times the network under `key` was built.
    pub fn builds(&self, key: &NetKey) -> usize {
        self.builds.get(key).copied().unwrap_or(0)
    }

    /// Whether `key` is resident.
    pub fn holds(&self, key: &NetKey) -> bool {
        self.entries.iter().any(|e| &e.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(file: &str, role: Role) -> NetKey {
        NetKey {
            file: file.into(),
            loras: Vec::new(),
            role,
        }
    }

    fn build(cache: &mut NetCache, k: &NetKey, cost: u64, pinned: bool) -> Rc<String> {
        let name = format!("{}", k.file.display());
        cache
            .get_or_build(k, cost, pinned, || Ok::<_, ()>(name))
            .unwrap()
    }

    /// With `Largest`, two swappable networks never stay together and pinned ones always stay;
    /// with `All`, everything stays and each is built once.
    #[test]
    fn residency_swaps_the_swappable_and_keeps_the_pinned() {
        let (base, refiner) = (key("base", Role::Unet), key("refiner", Role::Unet));
        let vae = key("base", Role::Vae);
        for (residency, builds) in [(Residency::All, 1), (Residency::Largest, 2)] {
            let mut cache = NetCache::new(residency);
            build(&mut cache, &vae, 80, true);
            for _ in 0..2 {
                build(&mut cache, &base, 2600, false);
                build(&mut cache, &refiner, 2300, false);
                assert!(cache.holds(&vae));
                assert_eq!(cache.holds(&base), residency == Residency::All);
            }
            assert_eq!(cache.builds(&base), builds);
            assert_eq!(cache.builds(&refiner), builds);
            assert_eq!(cache.builds(&vae), 1);
            cache.retain(|k| k.file != std::path::Path::new("base"));
            assert!(!cache.holds(&vae));
        }
    }

    /// A value of another type under the same key is built again rather than handed out as the
    /// wrong type.
    #[test]
    fn a_key_holds_one_type() {
        let mut cache = NetCache::new(Residency::Largest);
        let k = key("net", Role::Vae);
        build(&mut cache, &k, 10, false);
        let n = cache
            .get_or_build(&k, 10, false, || Ok::<_, ()>(7usize))
            .unwrap();
        assert_eq!(*n, 7);
        assert_eq!(cache.builds(&k), 2);
    }
}
