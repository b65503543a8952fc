"""Prototype (numpy), not the shipped detector: would a per-coordinate, binned KS
statistic, max-combined with the kernel statistic, catch what the kernel misses?

Reads the cached all-MiniLM-L6-v2 embeddings of benches/reference_fl.py (FL_CACHE,
default /work/fl: emb_ref, emb_null and the five shift pools). Windows of w = 100 drawn
with replacement from the null pool, a share of them from a shift pool. Statistics:
  kernel  the shipped sketch's S (128 random Fourier features at the median bandwidth
          plus the norm coordinate), against the reference half's mean;
  binKS   per coordinate, the window's empirical CDF at the reference's 15 inner
          sixteenths, max over coordinates and quantiles of |F_w - k/16| (a quantile
          sketch: 15 x d floats, no vectors);
  max     max of the two, each over its null median.
Each is thresholded at its own 95 % null quantile (2000-3000 null windows), so rates are
at a matched 5 % false-alarm rate. Run 2026-12-04 (one seed):
  kernel  trunc100 0.20  topic50 0.78  norm10 1.00
  binKS   trunc100 0.99  topic50 0.53  norm10 0.10
  max     trunc100 0.96  topic50 0.71  norm10 1.00
    python3 benches/reference/prototype_binned_ks.py
"""
import os
import numpy as np
rng=np.random.default_rng(0)
L=lambda n: np.load(os.path.join(os.environ.get('FL_CACHE', '/work/fl'), f'emb_{n}.npy')).astype(np.float64)
ref=L('ref'); null=L('null')
pools={k:L(k) for k in ['topic','language','truncation','typos','norm']}
d=ref.shape[1]; w=100; Q=16
qs=np.quantile(ref,np.arange(1,Q)/Q,axis=0)  # (Q-1, d)
def bins(x): return (x[:,None,:]>qs[None,:,:]).sum(1)  # (n,d) in 0..Q-1
B0=bins(null); Bs={k:bins(p) for k,p in pools.items()}
target=np.arange(1,Q)/Q
def stat(b):
    # window empirical CDF at the reference quantiles, per dim
    cnt=np.stack([(b<k).mean(0) for k in range(1,Q)])  # (Q-1,d)
    return (np.abs(cnt-target[:,None])).max()
def gen(src,share,N):
    out=[]
    for _ in range(N):
        b=B0[rng.integers(0,len(B0),w)].copy()
        if src is not None:
            t=rng.random(w)<share
            if t.any(): b[t]=src[rng.integers(0,len(src),t.sum())]
        out.append(stat(b))
    return np.array(out)
h=np.quantile(gen(None,0,2000),0.95)
print('h',h)
row=[]
for k,src in Bs.items():
    for share in [0.1,0.5,1.0]:
        row.append(f"{k[:5]}{int(share*100)}:{(gen(src,share,300)>h).mean():.2f}")
print('binKS',' '.join(row))
# combination with the kernel statistic
D=128
i=rng.integers(0,len(ref),4000); j=rng.integers(0,len(ref),4000)
sig=np.median(np.linalg.norm(ref[i]-ref[j],axis=1))
W=rng.standard_normal((d,D))/sig; bb=rng.uniform(0,2*np.pi,D)
rff=lambda x: np.sqrt(2/D)*np.cos(x@W+bb)
kref=rff(ref); kvar=kref.var(0).sum(); mu=kref.mean(0)
nm=np.linalg.norm(ref,axis=1); nmu=nm.mean(); nsd=max(nm.std(),1e-3*nmu)
def feat(x): return np.hstack([rff(x), (((np.linalg.norm(x,axis=1)-nmu)/nsd)*np.sqrt(kvar/8))[:,None]])
F0=feat(null); Fs={k:feat(p) for k,p in pools.items()}
mu=np.append(mu,0)
def gen2(k,share,N):
    out=[]
    for _ in range(N):
        idx=rng.integers(0,len(B0),w); b=B0[idx].copy(); f=F0[idx].copy()
        if k is not None:
            t=rng.random(w)<share
            if t.any():
                j=rng.integers(0,len(Bs[k]),t.sum()); b[t]=Bs[k][j]; f[t]=Fs[k][j]
        out.append((((f.mean(0)-mu)**2).sum(), stat(b)))
    return np.array(out)
n0=gen2(None,0,3000); med=np.median(n0,axis=0)
for name,c in {'kernel':[0],'binKS':[1],'max':[0,1]}.items():
    h=np.quantile((n0[:,c]/med[c]).max(1),0.95)
    row=[]
    for k in Bs:
        for share in [0.1,0.5,1.0]:
            st=gen2(k,share,300); row.append(f"{k[:5]}{int(share*100)}:{((st[:,c]/med[c]).max(1)>h).mean():.2f}")
    print(name.ljust(7),' '.join(row),flush=True)
